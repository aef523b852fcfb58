"""A trained run on another lab's labelled images: zero-shot, with AdaBN, after k labels per class.

  python benchmarks/other_lab_adaptation.py --workdir=runs/cnn_xsite \
      --sets=../shared/data/xsite_dev/lisc,../shared/data/xsite_dev/bionet \
      [--k=10] [--draws=3] [--modes=whole,head] [--unlabelled] [--out=adaptation.json]

Prints JSON with, for each set, the balanced accuracy over the classes present (argmax over all
the run's classes, and restricted to the classes present):
- zero_shot: the run as it is;
- adabn: BatchNorm statistics recomputed on the set's images (no labels);
- unlabelled (with --unlabelled): configs/adapt_unlabelled.py run on the set's images without
  their labels (pseudo-labels chosen among the classes present), then scored on the same images;
  beside it the run's PBC validation accuracy before and after, and the guard's choice;
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


def scores(workdir: str, folder: str, with_adabn: bool = False) -> dict:
  """{"as_is": ..., and with `with_adabn` "adabn": ...}: the run's balanced accuracies on the
  folder, with its own BatchNorm statistics and with the folder's."""
  from bloodcell_jax.evaluation import adaptation, inference, labelled_set
  config, class_names, model, state, _ = inference.load_run(workdir)
  data = inference.read_labelled(folder, config.image_size, class_names, "--sets")
  states = {"as_is": state}
  if with_adabn:
    states["adabn"] = adaptation.adapt_batch_stats(model, state, data.images)
  out = {}
  for name, variables in states.items():
    probabilities = inference.predict(model, variables, data.images, batch_size=128)
    summary = labelled_set.summarize(probabilities, data.labels, class_names)
    out[name] = {"balanced_accuracy_8class": round(summary["balanced_accuracy"], 4),
                 "balanced_accuracy_restricted":
                     round(summary["restricted_balanced_accuracy"], 4)}
  return out


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="the trained run")
  parser.add_argument("--sets", required=True, help="comma-separated labelled ImageFolders")
  parser.add_argument("--k", default="10", help="comma-separated labels per class")
  parser.add_argument("--draws", type=int, default=3, help="seeded draws per k")
  parser.add_argument("--modes", default="whole,head", help="whole and/or head")
  parser.add_argument("--unlabelled", action="store_true",
                      help="also self-train on each set's images without labels")
  parser.add_argument("--out", default="", help="also write the JSON here")
  args = parser.parse_args()
  report = {"workdir": args.workdir, "sets": {}}
  for folder in args.sets.split(","):
    name = os.path.basename(os.path.normpath(folder))
    before = scores(args.workdir, folder, with_adabn=True)
    result = {"zero_shot": before["as_is"], "adabn": before["adabn"]}
    if args.unlabelled:
      scratch = tempfile.mkdtemp(prefix="self_train_")
      try:
        run = os.path.join(scratch, "run")
        results = self_train(args.workdir, folder, run)
        guard = results["guard"]
        result["unlabelled"] = {
            **scores(run, folder)["as_is"], "pbc_val_before": guard["start_val_accuracy"],
            "pbc_val_after": results["val_accuracy"], "result_step": results["best_step"],
            "rejected_epochs": guard["rejected_epochs"],
            "pseudo_labelled": results["self_training"]["per_class"]}
      finally:
        shutil.rmtree(scratch, ignore_errors=True)
      print(json.dumps({name: {"unlabelled": result["unlabelled"]}}), file=sys.stderr)
    for k in (int(v) for v in args.k.split(",") if v):
      for mode in args.modes.split(","):
        draws = []
        for seed in range(args.draws):
          scratch = tempfile.mkdtemp(prefix="adapt_")
          try:
            train, test = draw_split(folder, k, seed, scratch)
            run = os.path.join(scratch, "run")
            fine_tune(args.workdir, train, run, mode, seed)
            draws.append(scores(run, test)["as_is"])
          finally:
            shutil.rmtree(scratch, ignore_errors=True)
        result[f"k_{k}_{mode}"] = {"mean": mean_of(draws), "draws": draws}
        print(json.dumps({name: {f"k_{k}_{mode}": result[f"k_{k}_{mode}"]}}), file=sys.stderr)
    report["sets"][name] = result
  text = json.dumps(report, indent=1)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
