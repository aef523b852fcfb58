"""How well a run's out-of-distribution scores tell its own held-out images from others.

  python benchmarks/ood.py --workdir=runs/cnn_robust \
      --sets=../shared/data/xsite_dev/lisc,../shared/data/xsite_dev/bionet [--out=ood.json]

The in-distribution images are the run's validation split (its feature and cell models were
fitted on training images; only the combined score's scales and threshold saw these images).
Against them, each of:
- `shift_<name>`: the validation images under each shift of the robustness suite at
  severity 5 (fixed placements, bloodcell_jax/evaluation/robustness.py);
- `contaminants`: pictures that are not cell images, drawn as the cleaning tests draw them
  (tests/helpers/injection.py: photos, cartoons, logos, text, screenshots, blank frames,
  noise, and such content pasted or written over validation cells), --contaminants per kind;
- each labelled folder of --sets (another lab's cells).
For every score of ood.py (msp, energy, mahalanobis, knn, cell, colour and the combined
ood_score): the AUROC (1: every outside image scores above every held-out one) and the
false-positive rate at 95% true-positive rate (the share of outside images scoring below the
score that 95% of held-out images stay under); the share flagged by the run's flag. For the
labelled folders also: the share of the run's wrong predictions flagged and of its right
ones passed. And selective prediction on the validation split (accuracy at 80/90/95%
coverage, AURC; ranked by the softmax maximum and by the feature margin), and what the
scores cost `predict`: the median seconds of 3 passes over --timing_images validation
images, probabilities alone against probabilities with every score (images already in
memory: reading them costs both the same). Prints JSON.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

SCORES = ("msp", "energy", "mahalanobis", "knn", "feature_margin", "cell", "colour",
          "ood_score")


def separation(inside: dict, outside: dict) -> dict:
  """AUROC and FPR at 95% TPR of every score present in both, and the flagged share."""
  from sklearn import metrics
  found = {}
  for name in SCORES:
    if name not in inside or name not in outside:
      continue
    truth = np.r_[np.zeros(len(inside[name])), np.ones(len(outside[name]))]
    values = np.r_[inside[name], outside[name]]
    cut = np.quantile(inside[name], 0.95)
    found[name] = {"auroc": round(float(metrics.roc_auc_score(truth, values)), 4),
                   "fpr_at_95_tpr": round(float(np.mean(outside[name] <= cut)), 4)}
  found["flagged"] = round(float(np.mean(outside["flag"] != "ok")), 4)
  return found


def contaminants(cells: np.ndarray, per_kind: int, seed: int = 0) -> np.ndarray:
  from helpers import injection
  rng = np.random.default_rng(seed)
  return np.stack([injection.contaminant(kind, rng, cells[(i * 7 + j) % len(cells)])
                   for i, kind in enumerate(injection.CONTAMINANT_KINDS)
                   for j in range(per_kind)])


def timing(plain, with_scores, images) -> dict:
  """Median seconds of 3 calls of each (after one to compile), and their ratio."""
  import time
  medians = {}
  for name, fn in (("probabilities", plain), ("with_scores", with_scores)):
    fn(images)
    seconds = []
    for _ in range(3):
      start = time.perf_counter()
      fn(images)
      seconds.append(time.perf_counter() - start)
    medians[name] = round(float(np.median(seconds)), 3)
  return {**medians, "images": len(images),
          "ratio": round(medians["with_scores"] / medians["probabilities"], 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a trained run with ood.npz")
  parser.add_argument("--sets", default="", help="comma-separated labelled ImageFolders")
  parser.add_argument("--contaminants", type=int, default=20, help="pictures per kind")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--timing_images", type=int, default=1000)
  parser.add_argument("--out", default="", help="also write the JSON here")
  args = parser.parse_args()

  from bloodcell_jax.augment import shifts
  from bloodcell_jax.data import splits
  from bloodcell_jax.evaluation import inference, robustness, selective
  run = inference.load_run(args.workdir)
  trust = inference.ood_model(args.workdir)
  if trust is None:
    sys.exit(f"--workdir={args.workdir}: no ood.npz; rerun the run's training command to "
             "re-evaluate it with this version")
  layer = inference.classifier_layer(run.config)

  def scored(images):
    logits, features = inference.logits_and_features(run.model, run.state, images,
                                                     args.batch_size, layer)
    return logits, trust.scores(logits, features, images, every=True)

  val = splits.load_splits(run.config.data, run.config.image_size,
                           run.config.data.split_seed).val
  val_logits, inside = scored(val.images)
  correct = val_logits.argmax(axis=1) == val.labels
  report = {"workdir": args.workdir, "held_out": f"validation split ({len(val)} images)",
            "model": trust.describe(), "val_flagged": round(float(np.mean(inside["flag"] != "ok")),
                                                            4),
            "selective": {rank: {k: round(v, 4) for k, v in selective.summary(
                -inside[rank], correct, "val").items()}
                          for rank in ("msp", "feature_margin") if rank in inside},
            "outside": {}}
  for name in shifts.SHIFTS.names():
    uniforms = robustness.shift_uniforms(name, len(val), seed=0)
    images = robustness.shifted(name, val.images, 5, uniforms)
    report["outside"][f"shift_{name}"] = separation(inside, scored(images)[1])
  report["outside"]["contaminants"] = separation(
      inside, scored(contaminants(val.images, args.contaminants))[1])
  for folder in [f for f in args.sets.split(",") if f]:
    data = inference.read_labelled(folder, run.config.image_size, run.class_names, "--sets")
    logits, outside = scored(data.images)
    found = separation(inside, outside)
    right = logits.argmax(axis=1) == data.labels
    flagged = outside["flag"] != "ok"
    found["wrong_flagged"] = round(float(np.mean(flagged[~right])), 4) if (~right).any() else None
    found["right_passed"] = round(float(np.mean(~flagged[right])), 4) if right.any() else None
    report["outside"][os.path.basename(os.path.normpath(folder))] = found
  report["predict_seconds"] = timing(
      lambda x: inference.predict(run.model, run.state, x, args.batch_size), scored,
      val.images[:args.timing_images])
  shift_keys = [k for k in report["outside"] if k.startswith("shift_")]
  report["shifts_mean_auroc"] = {
      name: round(float(np.mean([report["outside"][k][name]["auroc"] for k in shift_keys])), 4)
      for name in SCORES if name in report["outside"][shift_keys[0]]}
  text = json.dumps(report, indent=1)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
