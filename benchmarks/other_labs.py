"""How other labs' images differ from the training lab's, and which single change moves a run most.

  python benchmarks/other_labs.py --reference=../shared/data/pbc96 \
      --sets=../shared/data/xsite_dev/lisc,../shared/data/xsite_dev/bionet [--workdir=runs/cnn]

Prints JSON. For each image folder (the reference and each set):
- scale and framing: the nucleus's radius of gyration in pixels and its centroid's distance from
  the image centre (bloodcell_jax.models.framing's colour detector), median and 10-90th
  percentiles, and per class;
- colour: the background colour (the brightest 5x5 window per channel), the mean colour and the
  per-channel standard deviation over the image;
- focus: the variance of the Laplacian of the grey image (median; higher is sharper).
With --workdir, the run's balanced accuracy (over the classes present, argmax restricted to
them) on each set as it is and after one change made to the set's images at test time, which
the run never saw: `framing` (each image re-cut about its nucleus), `colour` (each channel
moved to the reference's mean and spread, Reinhard's transfer in RGB), `background` (channels
scaled so the background matches the reference's), `framing+colour`.
With --sheet, a PNG of 12 images of each folder above the same images framed.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MAX_REFERENCE_IMAGES = 2000


def read_folder(path: str, limit: int = 0, seed: int = 0):
  """(uint8 images, class name per image) of an ImageFolder; `limit` > 0 draws that many."""
  from bloodcell_jax.data import sources
  data = sources.read_image_folder(path, 96)
  if limit and len(data) > limit:
    data = data.subset(np.sort(np.random.default_rng(seed).choice(len(data), limit,
                                                                  replace=False)))
  return data.images, [data.class_names[c] for c in data.labels]


def laplacian_variance(images: np.ndarray) -> np.ndarray:
  grey = images.astype(np.float32).mean(-1)
  lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
         - 4 * grey[:, 1:-1, 1:-1])
  return lap.reshape(len(images), -1).var(axis=1)


def describe(images: np.ndarray, labels) -> dict:
  import jax

  from bloodcell_jax.models import framing
  x = images.astype(np.float32)
  cy, cx, radius = map(np.asarray, jax.jit(framing.nucleus_geometry)(x))
  offset = np.hypot(cy - (images.shape[1] - 1) / 2, cx - (images.shape[2] - 1) / 2)
  spread = lambda v: [round(float(q), 1) for q in np.percentile(v, [50, 10, 90])]
  return {
      "num_images": len(images),
      "nucleus_radius_px_median_p10_p90": spread(radius),
      "nucleus_radius_px_per_class": {c: round(float(np.median(radius[np.array(labels) == c])), 1)
                                      for c in sorted(set(labels))},
      "nucleus_offset_px_median_p10_p90": spread(offset),
      "background_rgb": np.round(np.asarray(framing.background(x)).mean(axis=(0, 1, 2))).tolist(),
      "mean_rgb": np.round(x.mean(axis=(0, 1, 2))).tolist(),
      "channel_std_rgb": np.round(x.std(axis=(1, 2)).mean(axis=0), 1).tolist(),
      "laplacian_variance_median": round(float(np.median(laplacian_variance(images))), 1),
  }


def changes(reference: np.ndarray):
  """Test-time changes, each a function of float images, towards the reference's statistics."""
  import jax

  from bloodcell_jax.models import framing
  ref = reference.astype(np.float32)
  ref_mean = ref.mean(axis=(1, 2)).mean(axis=0)
  ref_std = ref.std(axis=(1, 2)).mean(axis=0)
  ref_background = np.asarray(framing.background(ref)).mean(axis=0)
  frame = jax.jit(framing.frame_cells)

  def colour(x):
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
    return np.clip((x - mean) / np.maximum(std, 1.0) * ref_std + ref_mean, 0, 255)

  def background(x):
    return np.clip(x * ref_background / np.asarray(framing.background(x)), 0, 255)

  def framed(x):
    return np.asarray(frame(x))

  return {"none": lambda x: x, "framing": framed, "colour": colour, "background": background,
          "framing+colour": lambda x: colour(framed(x))}


def balanced_accuracies(workdir: str, sets: dict, reference: np.ndarray) -> dict:
  from bloodcell_jax.evaluation import inference, labelled_set
  config, class_names, model, state, _ = inference.load_run(workdir)
  to_reference = changes(reference)
  out = {}
  for name, (images, labels) in sets.items():
    indices = np.array([class_names.index(c) for c in labels])
    out[name] = {}
    for change, apply in to_reference.items():
      x = apply(images.astype(np.float32))
      probabilities = inference.predict(model, state, x, batch_size=128)
      summary = labelled_set.summarize(probabilities, indices, class_names)
      out[name][change] = {"balanced_accuracy_8class": round(summary["balanced_accuracy"], 4),
                           "balanced_accuracy_restricted":
                               round(summary["restricted_balanced_accuracy"], 4)}
  return out


def framing_sheet(folders: dict, path: str, per_row: int = 12):
  """A PNG: for each folder, a row of images and below it the same images framed."""
  import jax
  from PIL import Image

  from bloodcell_jax.models import framing
  rows = []
  for images in folders.values():
    picks = images[np.random.default_rng(0).choice(len(images), per_row, replace=False)]
    framed = np.asarray(jax.jit(framing.frame_cells)(picks.astype(np.float32)))
    rows += [np.concatenate(list(picks), axis=1),
             np.concatenate(list(np.clip(framed, 0, 255).astype(np.uint8)), axis=1)]
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference", required=True, help="the training lab's ImageFolder")
  parser.add_argument("--sets", required=True, help="comma-separated ImageFolders of other labs")
  parser.add_argument("--workdir", default="", help="a training run to score on the sets")
  parser.add_argument("--sheet", default="", help="write a PNG of images before and after framing")
  args = parser.parse_args()
  reference, reference_labels = read_folder(args.reference, MAX_REFERENCE_IMAGES)
  sets = {os.path.basename(os.path.normpath(p)): read_folder(p) for p in args.sets.split(",")}
  report = {"reference": {os.path.basename(os.path.normpath(args.reference)):
                          describe(reference, reference_labels)},
            "sets": {name: describe(*data) for name, data in sets.items()}}
  if args.sheet:
    framing_sheet({"reference": reference, **{n: images for n, (images, _) in sets.items()}},
                  args.sheet)
  if args.workdir:
    report["workdir"] = args.workdir
    report["balanced_accuracy"] = balanced_accuracies(args.workdir, sets, reference)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
