"""Robustness benchmark: a trained run's accuracy under distribution shifts.

  bloodcell-robustness --workdir=DIR [--input=PATH [--classes=a,b,...]] [--out=FILE]
      [--ema] [--adapt_bn] [--shifts=defocus,stain,...] [--seed=0]

Evaluates the run's best checkpoint (its weight average with --ema) on the run's
validation split, or on a labelled --input (ImageFolder or .npz), clean and under every
shift of `bloodcell_jax.data.shifts` at severities 1 to 5, with fixed seeds: each image
gets the same random placement of a shift at every severity, and the same on every
run. --adapt_bn recomputes the BatchNorm statistics on each shifted set before
predicting it (AdaBN; test-time adaptation without labels). Several --workdir runs (an
ensemble, such as configs/sweeps/xsite_pair.py's) are measured on their averaged
probabilities, each adapted on its own with --adapt_bn; they must have the same classes,
image size and validation split, and --out is then required.

With --input, the clean images' balanced accuracy over the classes present and per-class
recall are written too (key `labelled_set`), with the model choosing among all the run's classes
and restricted to --classes (default: the classes present; see labelled_set.py).

Writes --out (default DIR/robustness.json): accuracy per shift and severity, per shift
and per family, the mean corruption accuracy (mean over every shift and severity), the
worst family and shift, and the relative drop from clean; beside it a Markdown table
(.md) and a PNG grid of one image under every shift and severity (_grid.png). The
table is printed too.
"""

import json
import os
import time
import zlib

import numpy as np
from absl import logging

from bloodcell_jax import atomic, output_paths
from bloodcell_jax.augment import image_ops, shifts
from bloodcell_jax.data import splits
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import adaptation, inference, labelled_set
from bloodcell_jax.training import run_files


def shift_uniforms(name: str, count: int, seed: int) -> np.ndarray:
  """Per-image uniforms (count, R) of shift `name`: fixed by the seed and the shift's name."""
  width = max(shifts.SHIFTS.get(name).num_uniforms, 1)
  return np.random.default_rng([seed, zlib.crc32(name.encode())]).random((count, width),
                                                                        np.float32)


def shifted(name: str, images: np.ndarray, severity: int, uniforms: np.ndarray,
            batch_size: int = 256) -> np.ndarray:
  """`images` (uint8) under shift `name` at `severity`, as uint8 (what a camera would save)."""
  run = _compiled_shift(name)
  strength = np.float32(shifts.strength_of(severity))
  return np.concatenate([run(images[i:i + batch_size], strength,
                             uniforms[i:i + batch_size]).numpy()
                         for i in range(0, len(images), batch_size)])


_COMPILED = {}


def _compiled_shift(name: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name not in _COMPILED:
    @tf.function(autograph=False, reduce_retracing=True)
    def run(images, strength, uniforms):
      return image_ops.as_uint8(shifts.apply(name, images, strength, uniforms))
    _COMPILED[name] = run
  return _COMPILED[name]


def evaluate(predict_fn, images: np.ndarray, labels: np.ndarray, names, seed: int,
             adapt=None, clean_probabilities=None) -> dict:
  """Accuracy clean and under every shift in `names` at every severity.

  `predict_fn(images) -> probabilities`; `adapt(images) -> predict_fn` (AdaBN) gives the
  function to use on a shifted set, when given. `clean_probabilities`: the clean images'
  probabilities when the caller already has them.
  """
  accuracy = lambda fn, x: float(np.mean(np.argmax(fn(x), -1) == labels))
  if clean_probabilities is None:
    clean_probabilities = (adapt(images) if adapt else predict_fn)(images)
  results = {"clean": float(np.mean(np.argmax(clean_probabilities, -1) == labels)),
             "shifts": {}}
  for name in names:
    uniforms = shift_uniforms(name, len(images), seed)
    per_severity = {}
    for severity in shifts.SEVERITIES:
      x = shifted(name, images, severity, uniforms)
      per_severity[str(severity)] = accuracy(adapt(x) if adapt else predict_fn, x)
    results["shifts"][name] = per_severity
    logging.info("%-16s %s", name, " ".join(f"{v:.3f}" for v in per_severity.values()))
  return summarize(results)


def summarize(results: dict) -> dict:
  """Adds the means per shift and family, the mean corruption accuracy and the worst parts."""
  per_shift = {n: float(np.mean(list(v.values()))) for n, v in results["shifts"].items()}
  per_family = {}
  for family, members in shifts.families().items():
    present = [per_shift[m] for m in members if m in per_shift]
    if present:
      per_family[family] = float(np.mean(present))
  mean = float(np.mean(list(per_shift.values())))
  clean = results["clean"]
  return {**results, "per_shift": per_shift, "per_family": per_family,
          "mean_corruption_accuracy": mean,
          "relative_drop": (clean - mean) / clean if clean else None,
          "worst_shift": min(per_shift, key=per_shift.get),
          "worst_family": min(per_family, key=per_family.get)}


def markdown_table(results: dict) -> str:
  lines = ["| shift | family | " + " | ".join(f"severity {s}" for s in shifts.SEVERITIES) +
           " | mean |", "|---|---|" + "---|" * (len(shifts.SEVERITIES) + 1)]
  for name, per_severity in results["shifts"].items():
    cells = " | ".join(f"{100 * v:.1f}" for v in per_severity.values())
    lines.append(f"| {name} | {shifts.SHIFTS.get(name).family} | {cells} | "
                 f"{100 * results['per_shift'][name]:.1f} |")
  lines += ["", "| family | mean accuracy |", "|---|---|"]
  lines += [f"| {f} | {100 * v:.1f} |" for f, v in results["per_family"].items()]
  lines += ["", f"clean accuracy {100 * results['clean']:.1f}%, mean corruption accuracy "
            f"{100 * results['mean_corruption_accuracy']:.1f}% (relative drop "
            f"{100 * results['relative_drop']:.1f}%); worst family {results['worst_family']} "
            f"({100 * results['per_family'][results['worst_family']]:.1f}%), worst shift "
            f"{results['worst_shift']} ({100 * results['per_shift'][results['worst_shift']]:.1f}%)"]
  return "\n".join(lines) + "\n"


def plot_grid(image: np.ndarray, names, seed: int, path: str) -> None:
  """One image (uint8 H x W x 3) under every shift (rows) and severity (columns, 0 = clean)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  columns = (0,) + shifts.SEVERITIES
  figure, axes = plt.subplots(len(names), len(columns), squeeze=False,
                              figsize=(1.3 * len(columns) + 1.2, 1.3 * len(names)))
  for row, name in enumerate(names):
    uniforms = shift_uniforms(name, 1, seed)
    for col, severity in enumerate(columns):
      shown = image if severity == 0 else shifted(name, image[None], severity, uniforms)[0]
      axis = axes[row, col]
      axis.imshow(shown)
      axis.set_xticks([])
      axis.set_yticks([])
      if row == 0:
        axis.set_title("clean" if severity == 0 else f"severity {severity}", fontsize=8)
      if col == 0:
        axis.set_ylabel(name, fontsize=8)
  figure.tight_layout()
  atomic.save_figure(figure, path, 80)
  plt.close(figure)


def _labelled_images(config, class_names, input_path: str):
  """(images uint8, labels, description) of --input, or of the run's validation split."""
  if input_path:
    data = inference.read_labelled(input_path, config.image_size, class_names, "--input")
    return data.images, data.labels, data.name
  data = splits.load_splits(config.data, config.image_size, config.data.split_seed).val
  if data is None:
    raise UserError("--workdir: the run has no validation set (config.data.val_fraction=0); "
                    "pass labelled images with --input")
  return data.images, data.labels, f"validation split of {data.name}"


def _outputs(workdir: str, out: str, input_path: str):
  """(the JSON file, the stem of its .md table and _grid.png), checked before any work."""
  flag = "--out"
  if not out:
    flag, out = "--workdir", os.path.join(workdir, run_files.ROBUSTNESS)
  if not out.endswith(".json"):
    raise UserError(f"--out={out}: the JSON results; expected a name ending in .json (the "
                    "table and the grid go beside it, as .md and _grid.png)")
  out = output_paths.file_output(out, flag, [("--input", input_path)])
  stem = os.path.splitext(out)[0]
  for path in (stem + ".md", stem + "_grid.png"):
    output_paths.not_an_input(path, f"{flag}={out}", [("--input", input_path)])
  return out, stem


def _loaded_runs(workdirs, ema: bool, input_path: str):
  """inference.load_run of each workdir; several must agree on classes and image size, and
  (without --input) on their validation split, which is the first run's."""
  runs = [inference.load_run(w, ema) for w in workdirs]
  first = runs[0]
  for workdir, loaded in zip(workdirs[1:], runs[1:]):
    if (list(loaded.class_names), loaded.config.image_size) != (
        list(first.class_names), first.config.image_size):
      raise UserError(f"--workdir={workdir}: its classes and image size differ from "
                      f"--workdir={workdirs[0]}'s; averaged runs need the same")
    if not input_path and _val_ids(workdir) != _val_ids(workdirs[0]):
      raise UserError(f"--workdir={workdir}: its validation split is not --workdir="
                      f"{workdirs[0]}'s; pass labelled images with --input")
  return runs


def _val_ids(workdir: str):
  manifest = run_files.read_json(os.path.join(workdir, run_files.SPLIT_MANIFEST)) or {}
  return (manifest.get("val") or {}).get("ids")


def run(workdirs, input_path: str = "", out: str = "", ema: bool = False,
        adapt_bn: bool = False, names=(), seed: int = 0, batch_size: int = 256,
        grid_image: int = 0, classes=()) -> dict:
  workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
  names = list(names) or shifts.SHIFTS.names()
  for name in names:
    shifts.SHIFTS.get(name, "--shifts")
  if classes and not input_path:
    raise UserError(f"--classes={','.join(classes)}: needs --input (a labelled folder or .npz)")
  if len(workdirs) > 1 and not out:
    raise UserError("--out: required with several --workdir runs (the results are those of "
                    "their average, not of one run's workdir)")
  out, stem = _outputs(workdirs[0], out, input_path)
  runs = _loaded_runs(workdirs, ema, input_path)
  config, class_names = runs[0].config, runs[0].class_names
  if classes:
    labelled_set.restriction(class_names, classes)
  images, labels, described = _labelled_images(config, class_names, input_path)
  if not 0 <= grid_image < len(images):
    raise UserError(f"--grid_image={grid_image}: expected an index below {len(images)}")
  logging.info("robustness of %s on %d images (%s), %d shifts x %d severities%s",
               " + ".join(workdirs), len(images), described, len(names),
               len(shifts.SEVERITIES), ", BatchNorm adapted to each set" if adapt_bn else "")
  predict_fn = lambda x: np.mean([inference.predict(r.model, r.state, x, batch_size)
                                  for r in runs], axis=0)
  adapt = None
  if adapt_bn:
    adapt = lambda x: (lambda y: np.mean([inference.predict(
        r.model, adaptation.adapt_batch_stats(r.model, r.state, x, batch_size), y, batch_size)
        for r in runs], axis=0))
  started = time.perf_counter()
  clean = (adapt(images) if adapt else predict_fn)(images)
  results = evaluate(predict_fn, images, labels, names, seed, adapt, clean)
  summary = None
  if input_path:  # the labelled set's own numbers, on the clean images
    summary = labelled_set.summarize(clean, labels, class_names, list(classes) or None)
  results.update(workdir=os.path.abspath(workdirs[0]),
                 workdirs=[os.path.abspath(w) for w in workdirs], data=described,
                 num_images=len(images),
                 ema=ema, adapt_bn=adapt_bn, seed=seed,
                 seconds=round(time.perf_counter() - started, 1))
  if summary is not None:
    results["labelled_set"] = summary
  atomic.write_text(out, json.dumps(results, indent=2))  # shifts in the table's order
  table = markdown_table(results)
  atomic.write_text(stem + ".md", table)
  plot_grid(images[grid_image], names, seed, stem + "_grid.png")
  print(table)
  if summary is not None:
    print(labelled_set.markdown(summary))
  print(f"wrote {out}, {stem}.md and {stem}_grid.png")
  return results
