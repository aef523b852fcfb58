"""Class predictions of a trained run's best checkpoint for a folder or an .npz.

  python -m bloodcell_jax.predict --workdir=DIR --input=PATH --output=preds.csv

With --adapt_bn the BatchNorm statistics are first recomputed on the input images
(test-time adaptation to another lab, see bloodcell_jax/adaptation.py).

Writes one row per image: `id` (path relative to the input folder, or the row
index of an .npz), `pred` (class index), `pred_name`, and `p_<class>` for every
class. A folder may hold images directly or in sub-folders (an ImageFolder);
every image under it is predicted.
"""

import csv
import os

import numpy as np
from absl import app, flags

from bloodcell_jax import adaptation, cli
from bloodcell_jax.errors import UserError
from bloodcell_jax.inference import load_run, predict, read_unlabelled

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_INPUT = flags.DEFINE_string("input", None, "Image folder or .npz to predict.")
_OUTPUT = flags.DEFINE_string("output", "predictions.csv", "CSV file to write.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per forward pass.")
_EMA = flags.DEFINE_bool("ema", False, "Use the moving average of the weights (a run with "
                         "config.train.ema_decay > 0) instead of the raw weights.")
_ADAPT_BN = flags.DEFINE_bool("adapt_bn", False, "Recompute the BatchNorm statistics on the "
                              "input images before predicting them (AdaBN: for images from "
                              "another microscope, camera or stain; needs a few dozen images "
                              "or more).")


def check_writable_file(path: str, flag: str) -> None:
  """Fails before the work, not after it, when `path` cannot be written."""
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise UserError(f"{flag}={path}: no such directory {directory}")
  if not os.access(directory, os.W_OK) or os.path.isdir(path):
    raise UserError(f"{flag}={path}: cannot write a file there")


def write_csv(path: str, ids, probabilities: np.ndarray, class_names) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "pred", "pred_name"] + [f"p_{c}" for c in class_names])
    for image_id, probs in zip(ids, probabilities):
      pred = int(np.argmax(probs))
      writer.writerow([image_id, pred, class_names[pred]] + [f"{p:.6f}" for p in probs])


def main(argv):
  del argv
  if not _WORKDIR.value or not _INPUT.value:
    raise UserError("--workdir and --input are required")
  check_writable_file(_OUTPUT.value, "--output")
  config, class_names, model, state = load_run(_WORKDIR.value, _EMA.value)
  ids, images = read_unlabelled(_INPUT.value, config.image_size)
  if _ADAPT_BN.value:
    state = adaptation.adapt_batch_stats(model, state, images, _BATCH_SIZE.value)
  probabilities = predict(model, state, images, _BATCH_SIZE.value)
  write_csv(_OUTPUT.value, ids, probabilities, class_names)
  print(f"wrote {len(ids)} predictions to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_reporting_errors(main, argv))
