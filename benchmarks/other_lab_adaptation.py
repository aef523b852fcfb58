"""A trained run on another lab's labelled images: zero-shot, with AdaBN, after k labels per class.

  python benchmarks/other_lab_adaptation.py --workdir=runs/cnn_xsite \
      --sets=../shared/data/xsite_dev/lisc,../shared/data/xsite_dev/bionet \
      [--k=10] [--draws=3] [--modes=whole,head] [--unlabelled] [--out=adaptation.json]
  python benchmarks/other_lab_adaptation.py --workdir=runs/xsite/grey \
      --workdir=runs/xsite/colour --sets=...

With several --workdir (configs/sweeps/xsite_pair.py's two runs) each measurement adapts every
run the same way and averages their class probabilities, as `bloodcell-predict` does.
Prints JSON with, for each set, the balanced accuracy over the classes present (argmax over all
the run's classes, and restricted to the classes present):
- zero_shot: the run as it is;
- adabn: BatchNorm statistics recomputed on the set's images (no labels);
- unlabelled (with --unlabelled): configs/adapt_unlabelled.py run on the set's images without
  their labels (pseudo-labels chosen among the classes present), then scored on the same images;
  beside it the PBC validation accuracy before and after, and each run's guard's choice;
- k_<k>_<mode> (--k= empty: none): configs/adapt.py fine-tuned on k labelled images per class
  (a seeded draw; the rest of the set measures it), for each draw, and their mean; mode `whole`
  trains every layer, `head` only the classifier head. Each fine-tuning is a real `launch.py`
  run in a temporary workdir. A class with k images or fewer keeps at least one image for the
  measurement.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

HEAD_ONLY = "'(dense|logits|head_dense|predictions)/.*=train', '.*=freeze'"


def class_files(folder: str) -> dict:
  """{class: its image files, relative to the class folder} of an ImageFolder."""
  from bloodcell_jax.data import sources
  files = {}
  for path in sources.image_files(folder)[0]:
    name, rest = path.split(os.sep, 1) if os.sep in path else ("", path)
    if name:
      files.setdefault(name, []).append(rest)
  return files


def draw_split(folder: str, k: int, seed: int, out: str):
  """Links k images per class (fewer where a class has no more than k: one stays) into
  out/train and the rest into out/test; returns the two folders."""
  rng = np.random.default_rng(seed)
  for name, files in class_files(folder).items():
    chosen = set(rng.permutation(len(files))[:min(k, len(files) - 1)].tolist())
    for i, f in enumerate(files):
      target = os.path.join(out, "train" if i in chosen else "test", name, f)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.symlink(os.path.abspath(os.path.join(folder, name, f)), target)
  return os.path.join(out, "train"), os.path.join(out, "test")


def predicted(workdirs, folder: str, with_adabn: bool = False):
  """(labels, class names, {"as_is": ..., and with `with_adabn` "adabn": ...}): the runs'
  class probabilities on the folder, averaged over the runs, with their own BatchNorm
  statistics and with the folder's."""
  from bloodcell_jax.evaluation import adaptation, inference
  averaged, labels, class_names = {}, None, None
  for workdir in workdirs:
    config, names, model, state, _ = inference.load_run(workdir)
    if class_names is not None and list(names) != list(class_names):
      sys.exit(f"--workdir={workdir}: classes {names}, unlike the first run's {class_names}")
    class_names = names
    data = inference.read_labelled(folder, config.image_size, class_names, "--sets")
    labels = data.labels
    states = {"as_is": state}
    if with_adabn:
      states["adabn"] = adaptation.adapt_batch_stats(model, state, data.images)
    for name, variables in states.items():
      p = inference.predict(model, variables, data.images, batch_size=128) / len(workdirs)
      averaged[name] = averaged.get(name, 0) + p
  return labels, class_names, averaged


def scores(workdirs, folder: str, with_adabn: bool = False) -> dict:
  """{"as_is": ..., and with `with_adabn` "adabn": ...}: the balanced accuracies of the runs'
  averaged probabilities on the folder, over all classes and restricted to those present."""
  from bloodcell_jax.evaluation import labelled_set
  labels, class_names, averaged = predicted(workdirs, folder, with_adabn)
  out = {}
  for name, probabilities in averaged.items():
    summary = labelled_set.summarize(probabilities, labels, class_names)
    out[name] = {"balanced_accuracy_8class": round(summary["balanced_accuracy"], 4),
                 "balanced_accuracy_restricted":
                     round(summary["restricted_balanced_accuracy"], 4)}
  return out


def val_accuracy(workdirs) -> float:
  """The accuracy of the runs' averaged probabilities on their (shared) validation split."""
  from bloodcell_jax.results import predictions
  averaged, first_ids = 0, None
  for workdir in workdirs:
    ids, labels, probabilities, _ = predictions.read_probabilities(
        os.path.join(workdir, "predictions", "val.csv"))
    if first_ids is not None and ids != first_ids:
      sys.exit(f"--workdir={workdir}: its validation split differs from the first run's")
    first_ids, averaged = ids, averaged + probabilities
  return round(float(np.mean(np.argmax(averaged, axis=1) == labels)), 4)


def launch(recipe: str, workdir: str, out: str, *overrides: str) -> None:
  """launch.py with configs/<recipe>:<workdir> into `out`; exits with its error if it fails."""
  command = [sys.executable, os.path.join(ROOT, "launch.py"),
             f"--config={os.path.join(ROOT, 'configs', recipe)}:{workdir}", f"--workdir={out}",
             *overrides]
  done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if done.returncode:
    sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def fine_tune(workdir: str, train: str, out: str, mode: str, seed: int):
  images = sum(len(files) for files in class_files(train).values())
  launch("adapt.py", workdir, out, f"--config.data.train={train}", f"--config.seed={seed}",
         f"--config.batch_size={min(16, images)}",
         *([f"--config.optim.freeze={HEAD_ONLY}"] if mode == "head" else []))


def self_train(workdir: str, folder: str, out: str) -> dict:
  """configs/adapt_unlabelled.py on the folder's images, pseudo-labels among its classes; its
  results.json."""
  classes = ", ".join(repr(c) for c in sorted(class_files(folder)))
  launch("adapt_unlabelled.py", workdir, out, f"--config.self_training.unlabelled={folder}",
         f"--config.self_training.classes=({classes},)")
  with open(os.path.join(out, "results.json")) as f:
    return json.load(f)


def mean_of(draws: list) -> dict:
  return {key: round(float(np.mean([d[key] for d in draws])), 4) for key in draws[0]}


def run_folders(workdirs, scratch: str) -> list:
  """One folder under `scratch` for each run's adapted copy."""
  return [os.path.join(scratch, f"run{i}") for i in range(len(workdirs))]


def unlabelled_result(workdirs, folder: str) -> dict:
  """Each run self-trained on the folder's images, then averaged and scored on them; beside it
  the runs' (averaged) PBC validation accuracy before and after, and each guard's choice."""
  scratch = tempfile.mkdtemp(prefix="self_train_")
  try:
    guards, runs = [], run_folders(workdirs, scratch)
    for workdir, run in zip(workdirs, runs):
      results = self_train(workdir, folder, run)
      guards.append({"pbc_val_before": results["guard"]["start_val_accuracy"],
                     "pbc_val_after": results["val_accuracy"],
                     "result_step": results["best_step"],
                     "rejected_epochs": results["guard"]["rejected_epochs"],
                     "pseudo_labelled": results["self_training"]["per_class"]})
    return {**scores(runs, folder)["as_is"], "pbc_val_before": val_accuracy(workdirs),
            "pbc_val_after": val_accuracy(runs), "runs": guards}
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def few_label_result(workdirs, folder: str, k: int, mode: str, draws: int) -> dict:
  """For each seeded draw of k labels per class: each run fine-tuned on them, averaged and
  scored on the rest of the folder; the draws and their mean."""
  results = []
  for seed in range(draws):
    scratch = tempfile.mkdtemp(prefix="adapt_")
    try:
      train, test = draw_split(folder, k, seed, os.path.join(scratch, "images"))
      runs = run_folders(workdirs, scratch)
      for workdir, run in zip(workdirs, runs):
        fine_tune(workdir, train, run, mode, seed)
      results.append(scores(runs, test)["as_is"])
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  return {"mean": mean_of(results), "draws": results}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, action="append",
                      help="the trained run; repeat it to measure runs averaged")
  parser.add_argument("--sets", required=True, help="comma-separated labelled ImageFolders")
  parser.add_argument("--k", default="10", help="comma-separated labels per class")
  parser.add_argument("--draws", type=int, default=3, help="seeded draws per k")
  parser.add_argument("--modes", default="whole,head", help="whole and/or head")
  parser.add_argument("--unlabelled", action="store_true",
                      help="also self-train on each set's images without labels")
  parser.add_argument("--out", default="", help="also write the JSON here")
  args = parser.parse_args()
  report = {"workdirs": args.workdir, "sets": {}}
  for folder in args.sets.split(","):
    name = os.path.basename(os.path.normpath(folder))
    before = scores(args.workdir, folder, with_adabn=True)
    result = {"zero_shot": before["as_is"], "adabn": before["adabn"]}
    print(json.dumps({name: result}), file=sys.stderr)
    if args.unlabelled:
      result["unlabelled"] = unlabelled_result(args.workdir, folder)
      print(json.dumps({name: {"unlabelled": result["unlabelled"]}}), file=sys.stderr)
    for k in (int(v) for v in args.k.split(",") if v):
      for mode in args.modes.split(","):
        key = f"k_{k}_{mode}"
        result[key] = few_label_result(args.workdir, folder, k, mode, args.draws)
        print(json.dumps({name: {key: result[key]}}), file=sys.stderr)
    report["sets"][name] = result
  text = json.dumps(report, indent=1)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
