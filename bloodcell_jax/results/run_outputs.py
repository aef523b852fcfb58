"""What a finished run leaves beside results.json: every evaluated image's probabilities,
the temperature, the pictures, and the HTML report that shows them (process 0 only)."""

import logging
import os

import numpy as np

from bloodcell_jax import atomic, errors
from bloodcell_jax.evaluation import calibration
from bloodcell_jax.results import plots, predictions
from bloodcell_jax.training import run_files

NUM_WORST_ERRORS = 24


def write(workdir: str, run, results: dict, kept: dict, files: dict, best_step: int,
          worst_explained=None) -> None:
  """Writes the run's outputs; `kept` maps a prediction file's name (`<prefix><eval>[_tta]`)
  to (log probabilities, labels, image set), and `files` other files' names to their
  contents, as the evaluators left them; `worst_explained`: the Grad-CAM pictures of the
  most confident validation errors (explain.overlay), in `worst_errors` order."""
  class_names = list(run.data.class_names)
  _write_predictions(workdir, kept, class_names)
  for name, contents in files.items():
    atomic.write_bytes(os.path.join(workdir, name), contents)
  for key, confusion in results.items():
    if key.endswith("_confusion"):
      name = key.removesuffix("_confusion")
      accuracy = results[f"{name}_accuracy"]
      plots.plot_confusion(confusion, class_names,
                           os.path.join(workdir, f"confusion_{name}.png"),
                           f"{name} (step {best_step}), accuracy {accuracy:.2%}")
  if "val" in kept and "temperature" in results:
    _write_calibration(workdir, results, kept["val"][:2])
  if "val" in kept:
    _write_worst_errors(workdir, kept["val"][2], *kept["val"][:2], class_names, worst_explained)
  if run.config.eval.report:
    _write_preview(workdir, run)
    write_report(workdir)


def write_report(workdir: str) -> None:
  """report.html; a failure to draw it is a warning (the results are already written), but a
  full disk is an error: every later output would be stale as well."""
  from bloodcell_jax.results import report  # pylint: disable=g-import-not-at-top  (jinja2, sklearn)
  try:
    report.write_run_report(workdir)
  except Exception as e:  # pylint: disable=broad-except
    if errors.is_disk_full(e):
      raise
    logging.warning("could not write %s/report.html: %s", workdir, e)


def _write_predictions(workdir: str, kept: dict, class_names) -> None:
  """predictions/<name>.csv for every evaluated set: id, label, pred, confidence, p_<class>."""
  os.makedirs(os.path.join(workdir, run_files.PREDICTIONS_DIR), exist_ok=True)
  for name, (log_probs, labels, image_set) in kept.items():
    predictions.write_probabilities(os.path.join(workdir, run_files.PREDICTIONS_DIR, f"{name}.csv"),
                                    image_set.ids, np.exp(log_probs), class_names, labels)


def _write_calibration(workdir: str, results: dict, val_outputs) -> None:
  """calibration.json (the temperatures `predict --calibrated` applies) and the reliability
  diagram of the validation set before and after temperature scaling."""
  record = {key: results[key] for key in ("temperature", "ema_temperature") if key in results}
  atomic.write_json(os.path.join(workdir, run_files.CALIBRATION),
                   {**record, "fitted_on": "val", "num_examples": len(val_outputs[1]),
                    "num_bins": calibration.NUM_BINS})
  log_probs, labels = val_outputs
  curves = []
  for label, temperature, ece in (
      ("uncalibrated", 1.0, results["val_ece"]),
      (f"T = {results['temperature']:.2f}", results["temperature"], results["val_ece_calibrated"])):
    probs = np.exp(calibration.scaled_log_probabilities(log_probs, temperature))
    curves.append((label, *calibration.reliability_bins(probs, labels), ece))
  plots.plot_reliability(curves, os.path.join(workdir, "reliability_val.png"),
                         "validation set, 15 confidence bins")


def worst_errors(log_probs, labels) -> np.ndarray:
  """Indices of the images predicted wrong with the highest confidence, at most
  NUM_WORST_ERRORS, most confident first."""
  predicted = log_probs.argmax(axis=1)
  confidence = log_probs.max(axis=1)
  wrong = np.flatnonzero(predicted != labels)
  return wrong[np.argsort(-confidence[wrong], kind="stable")][:NUM_WORST_ERRORS]


def _write_worst_errors(workdir: str, val, log_probs, labels, class_names,
                        explained=None) -> None:
  """The validation images the model got wrong with the highest confidence, with their
  Grad-CAM pictures when given (for the report's thumbnails)."""
  worst = worst_errors(log_probs, labels)
  extra = {} if explained is None else {"explained": explained}
  np.savez_compressed(os.path.join(workdir, run_files.WORST_ERRORS), images=val.images[worst],
                      ids=val.ids[worst], labels=labels[worst],
                      predicted=log_probs.argmax(axis=1)[worst],
                      confidence=np.exp(log_probs.max(axis=1))[worst],
                      class_names=np.array(class_names), **extra)


def _write_preview(workdir: str, run) -> None:
  """Two epochs of `augment.train` and one of `augment.eval_strong` on one training image
  per class."""
  from bloodcell_jax.augment import grid as augment_grid  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config, train = run.config, run.data.train
  picks = augment_grid.one_per_class(train, 8)
  images, labels = train.images[picks], train.labels[picks]
  rows = [("originals", list(images), [train.class_names[label] for label in labels])]
  for key, count in (("train", 2), ("eval_strong", 1)):
    drawn = augment_grid.pipeline_rows(config.augment[key], images, labels, len(train.class_names),
                                  count, config.seed, f"config.augment.{key}")
    rows += [(f"{key} #{e + 1}", row, None) for e, row in enumerate(drawn)]
  augment_grid.draw_grid(rows, os.path.join(workdir, run_files.AUGMENTATION_PREVIEW),
                    f"train: {config.augment.train}\neval_strong: {config.augment.eval_strong}")
