"""The names of what a run leaves in its workdir (and a sweep in its directory): one place, so
that every program that reads a run agrees with the code that writes it; and the one reader of its
JSON files."""

import json
import os
from typing import Optional

from bloodcell_jax.errors import UserError

CONFIG = "config.json"  # the resolved config, as trained
SPLIT_MANIFEST = "split_manifest.json"  # the ids of each split
RESULTS = "results.json"  # final metrics and what the run was; written last
CALIBRATION = "calibration.json"  # fitted temperatures (`predict --calibrated`)
FAILURE = "failure.json"  # a failed sweep run's one-line error
METRICS = "metrics.jsonl"  # the scalars of every logged step and epoch
PREDICTIONS_DIR = "predictions"  # every evaluated image's probabilities, one CSV per set
CHECKPOINTS_DIR = "checkpoints"  # latest/ and best/
WORST_ERRORS = "worst_val_errors.npz"
AUGMENTATION_PREVIEW = "augmentation_preview.png"
REPORT = "report.html"
TRAINING_CURVES = "training_curves.png"
ROBUSTNESS = "robustness.json"
LOCK = ".lock"
# A sweep's directory.
SWEEP_RECORD = "sweep.json"
SWEEP_CHART = "sweep_chart.png"
RUN_LOG = "train.log"


class DamagedFile(UserError):
  """A file a run, a sweep or an export left that is there but cannot be read as what it is
  (cut short, overwritten, edited): one line naming it, in every program that reads it."""


def damaged(path: str, reason: str) -> DamagedFile:
  return DamagedFile(f"{path}: damaged ({reason}); restore it, or rerun the command that "
                     "wrote it")


def read_json(path: str, required: bool = False) -> Optional[dict]:
  """The JSON object in `path`; None when it is missing (a UserError when `required`); a
  DamagedFile when it is there but unreadable or not a JSON object."""
  if not os.path.exists(path):
    if required:
      raise UserError(f"{path}: missing; expected a file written by bloodcell_jax")
    return None
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    raise damaged(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
  if not isinstance(value, dict):
    raise damaged(path, f"expected a JSON object, found a {type(value).__name__}")
  return value


def read_metrics(workdir: str) -> list:
  """The records of a run's metrics.jsonl ([] when it has none); a line cut short by a kill
  is skipped, the others still count."""
  path = os.path.join(workdir, METRICS)
  if not os.path.isfile(path):
    return []
  records = []
  with open(path, errors="replace") as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict):
        records.append(record)
  return records
