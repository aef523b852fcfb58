"""Class predictions of one trained run, or the average of several, for a folder or an .npz.

  bloodcell-predict --workdir=DIR --input=PATH --output=preds.csv
  bloodcell-predict --workdir=A --workdir=B --workdir=C --tta=d4 --calibrated ...
  bloodcell-predict --model=cnn.onnx --input=PATH --output=preds.csv
  bloodcell-predict --workdir=DIR --input=PATH --classes=basophil,eosinophil,lymphocyte,...

--model runs a model written by bloodcell_jax.export (a SavedModel directory, an .onnx or a
.tflite file) in its own runtime, to check an export on real images without writing code;
its TTA, calibration and weights were chosen at export time.

Each run predicts with its best checkpoint. With several --workdir the class
probabilities of the runs are averaged (an ensemble: other seeds, configs or models;
their class names must agree). --tta averages each run's probabilities over flipped
(and with d4, rotated) copies of every image, in the same jitted step; --calibrated
divides each run's logits by the temperature fitted on its validation set (the
probabilities change, the predicted classes do not). With --adapt_bn the BatchNorm
statistics are first recomputed on the input images (test-time adaptation to another
lab, see bloodcell_jax/adaptation.py).

--classes restricts every image's prediction to those classes (a lab that sees white cells
alone): the other classes' probabilities are set to 0 and the rest renormalised, so `pred`,
`pred_name` and `confidence` come from the choice among the classes named.

The summary line names the checkpoint each run's weights came from (the best, or the newest
readable one when the best is damaged). --output must not be one of the inputs.

Writes one row per image: `id` (path relative to the input folder, or the row
index of an .npz), `pred` (class index), `pred_name`, `confidence` (the predicted
class's probability), for runs with an out-of-distribution model (ood.npz) `ood_score`,
`cell_score` and `flag` (docs/trust.md), and `p_<class>` for every class. A folder may
hold images directly or in sub-folders (an ImageFolder); every image under it is predicted.
--abstain leaves `pred` and `pred_name` empty for flagged images; --explain=DIR writes a
Grad-CAM PNG per image (one --workdir run).
"""

from typing import NamedTuple, Optional

import numpy as np
from absl import flags

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "A training run's workdir; repeat it to "
                                     "average the probabilities of several runs.")
_MODEL = flags.DEFINE_multi_string("model", None, "An exported model (bloodcell-export); "
                                   "repeat it, or add --workdir, to average several.")
_INPUT = flags.DEFINE_string("input", None, "Image folder or .npz to predict.")
_OUTPUT = flags.DEFINE_string("output", "predictions.csv", "CSV file to write.")
# 128: on a CPU a larger batch gains nothing once running, and its first pass is slower (more
# fresh memory to touch): 1,000 images took 1.40 s at 128 against 1.71 s at 256 (2 cores).
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Images per forward pass.", lower_bound=1)
_EMA = flags.DEFINE_bool("ema", False, "Use the moving average of the weights (a run with "
                         "config.train.ema_decay > 0) instead of the raw weights.")
_TTA = flags.DEFINE_string("tta", "", "Test-time augmentation: average over a view set of "
                           "bloodcell_jax/evaluation/tta.py, 'flips' (4 views) or 'd4' (8 "
                           "rotations and reflections).")
_CALIBRATED = flags.DEFINE_bool("calibrated", False, "Divide the logits by the temperature "
                                "fitted on each run's validation set (calibration.json).")
_CLASSES = flags.DEFINE_list("classes", [], "Restrict every prediction to these classes "
                             "(comma-separated class names): the others' probabilities are "
                             "set to 0 and the rest renormalised.")
_ABSTAIN = flags.DEFINE_bool("abstain", False, "Leave `pred` and `pred_name` empty for the "
                             "images flagged as not to trust (flag other than ok).")
_EXPLAIN = flags.DEFINE_string("explain", "", "Also write, for every image, a PNG of it beside "
                               "a Grad-CAM heat map of where the predicted class came from, "
                               "into this folder (one --workdir run).")
_ADAPT_BN = flags.DEFINE_bool("adapt_bn", False, "Recompute the BatchNorm statistics on the "
                              "input images before predicting them (AdaBN: for images from "
                              "another microscope, camera or stain; needs a few dozen images "
                              "or more).")


def _check_classes(class_names) -> None:
  """--classes checked against a model's classes before any image is read."""
  from bloodcell_jax.evaluation import labelled_set  # pylint: disable=g-import-not-at-top
  if _CLASSES.value:
    labelled_set.restriction(class_names, _CLASSES.value)


class Predicted(NamedTuple):
  """One model's predictions of the input."""
  ids: list
  class_names: list
  probabilities: np.ndarray
  weights: str  # which weights (or export) they came from
  trust: Optional[dict]  # ood.OodModel.scores of each image; None without an ood model
  images: np.ndarray  # as read for the model, at its image size


def run_probabilities(workdir: str, input_path: str) -> Predicted:
  """One run's predictions of `input_path`, as the flags ask, with its out-of-distribution
  scores when the run has an ood model."""
  from bloodcell_jax.evaluation import adaptation, inference, ood  # pylint: disable=g-import-not-at-top
  opened = inference.open_run(workdir)
  config, class_names, model = opened
  _check_classes(class_names)
  temperature = inference.run_temperature(workdir, _EMA.value) if _CALIBRATED.value else 1.0
  ood_model = inference.ood_model(workdir, _EMA.value)
  unlabelled = inference.open_unlabelled(input_path, config.image_size)
  layer = inference.classifier_layer(config) if ood_model is not None else ""
  # The common case's forward pass compiles (or loads) while the checkpoint and images are read.
  ahead = (inference.compile_ahead(inference.features_step(model, layer),
                                   f"logits_and_features:{layer}", opened, len(unlabelled.ids),
                                   _BATCH_SIZE.value) if layer else None)
  state, weights = inference.restore_run(workdir, opened, _EMA.value)
  ids, images = unlabelled.ids, unlabelled.read()
  trust, logits = None, None
  if ood_model is not None:
    logits, features = (inference.logits_and_features(model, state, images, _BATCH_SIZE.value,
                                                      layer, ahead) if layer else
                        (np.log(inference.predict(model, state, images, _BATCH_SIZE.value)),
                         None))
    trust = ood_model.scores(logits, features, images)
  if _ADAPT_BN.value:
    state = adaptation.adapt_batch_stats(model, state, images, _BATCH_SIZE.value)
  if logits is not None and not _ADAPT_BN.value and not _TTA.value:
    probabilities = ood.softmax(logits, temperature)  # the forward pass the scores used
  else:
    probabilities = inference.predict(model, state, images, _BATCH_SIZE.value, _TTA.value,
                                      temperature)
  return Predicted(ids, class_names, probabilities, weights.describe(), trust, images)


def model_probabilities(path: str, input_path: str) -> Predicted:
  """An exported model's predictions of `input_path`, with its out-of-distribution scores
  when it carries the run's ood model."""
  from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.export import runtimes  # pylint: disable=g-import-not-at-top
  model = runtimes.load(path)
  _check_classes(model.metadata["class_names"])
  ids, images = inference.read_unlabelled(input_path, model.metadata["image_size"])
  outputs = model.outputs(images, _BATCH_SIZE.value)
  trust = None
  if model.ood is not None:
    trust = model.ood.scores(outputs["logits"], outputs.get("features"), images)
  return Predicted(ids, model.metadata["class_names"], outputs["probabilities"],
                   runtimes.weights_described(model.metadata), trust, images)


def main(argv):
  del argv
  from bloodcell_jax import output_paths  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.evaluation import labelled_set, tta  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.results import predictions  # pylint: disable=g-import-not-at-top
  sources = ([("--workdir", w, run_probabilities) for w in _WORKDIR.value or ()]
             + [("--model", m, model_probabilities) for m in _MODEL.value or ()])
  if not sources or not _INPUT.value:
    raise UserError("--input and one --workdir or --model at least are required")
  if not _WORKDIR.value:
    for flag in (_EMA, _TTA, _CALIBRATED, _ADAPT_BN):
      if flag.present:
        raise UserError(f"--{flag.name}: for --workdir runs; an exported model has its "
                        "weights, TTA and calibration chosen at export")
  if _TTA.value:
    tta.VIEWS.get(_TTA.value, "--tta")
  inputs = [("--input", _INPUT.value)] + [(flag, path) for flag, path, _ in sources]
  output_paths.file_output(_OUTPUT.value, "--output", inputs)
  if _EXPLAIN.value:
    if len(sources) != 1 or not _WORKDIR.value:
      raise UserError("--explain: explains one --workdir run's predictions; pass exactly one "
                      "--workdir (and no --model)")
    _check_explain_folder(_EXPLAIN.value)
  predicted = []
  for flag, source, probabilities_of in sources:
    predicted.append(probabilities_of(source, _INPUT.value))
    first, names = predicted[0].class_names, predicted[-1].class_names
    if list(names) != list(first):
      raise UserError(f"{flag}={source}: its classes {list(names)} are not those of "
                      f"{sources[0][0]}={sources[0][1]} {list(first)}; an ensemble needs "
                      "the same classes in the same order")
  ids, class_names = predicted[0].ids, predicted[0].class_names
  total = sum(p.probabilities for p in predicted) / len(predicted)
  restricted = ""
  if _CLASSES.value:
    kept = labelled_set.restriction(class_names, _CLASSES.value)
    total = labelled_set.restrict_probabilities(total, kept)
    restricted = f", restricted to {', '.join(class_names[i] for i in kept)}"
  trust = trust_of([p.trust for p in predicted])
  if _ABSTAIN.value and trust is None:
    raise UserError("--abstain: needs every --workdir run to have an out-of-distribution model "
                    "(ood.npz, written at the end of training); " + _no_trust(sources, predicted))
  predictions.write_probabilities(
      _OUTPUT.value, ids, total, class_names,
      extra=None if trust is None else {"ood_score": trust["ood_score"],
                                        "cell_score": trust["cell"], "flag": trust["flag"]},
      abstain=None if not _ABSTAIN.value else trust["flag"] != "ok")
  explained = ""
  if _EXPLAIN.value:
    explained = "; " + write_explanations(_WORKDIR.value[0], ids, predicted[0].images, total,
                                          class_names)
  runs = f" (mean of {len(sources)} models)" if len(sources) > 1 else ""
  print(f"wrote {len(ids)} predictions to {_OUTPUT.value}{runs}{restricted}{explained}; "
        + (_flagged(trust) if trust is not None else _no_trust(sources, predicted))
        + "; weights: " + " | ".join(p.weights for p in predicted))


def _check_explain_folder(path: str) -> None:
  """--explain: a folder that exists or can be made, outside the input folder (whose images
  predict would read again next time)."""
  import os  # pylint: disable=g-import-not-at-top

  from bloodcell_jax import output_paths  # pylint: disable=g-import-not-at-top
  folder, source = os.path.abspath(path), os.path.abspath(_INPUT.value)
  if os.path.isdir(source) and (folder == source or folder.startswith(source + os.sep)):
    raise UserError(f"--explain={path}: inside --input={_INPUT.value}, where its PNGs would be "
                    "read as images next time; choose a folder outside it")
  if os.path.exists(folder) and not os.path.isdir(folder):
    raise UserError(f"--explain={path}: a file; expected a folder for the PNGs")
  output_paths.directory_output(folder if os.path.isdir(folder) else os.path.dirname(folder),
                                "--explain")


def write_explanations(workdir: str, ids, images, probabilities, class_names) -> str:
  """--explain: a PNG per image of why the run gave it the predicted class; says where."""
  import os  # pylint: disable=g-import-not-at-top

  from PIL import Image  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.evaluation import explain, inference  # pylint: disable=g-import-not-at-top
  config, _, model, state, _ = inference.load_run(workdir, _EMA.value)
  predicted = probabilities.argmax(axis=1)
  drawn = explain.pictures(model, state, images, predicted, config.model.get("framing", "none"))
  os.makedirs(_EXPLAIN.value, exist_ok=True)
  for image_id, picture, label in zip(ids, drawn, predicted):
    path = os.path.join(_EXPLAIN.value, explain.png_name(image_id, class_names[label]))
    Image.fromarray(picture).save(path)
  return f"{len(ids)} Grad-CAM maps in {_EXPLAIN.value}"


def trust_of(scores: list) -> Optional[dict]:
  """The ensemble's ood_score (the mean of its models'), cell score (the largest) and flag
  (not_a_cell where a model says so, else the flag of the model with the largest ood_score
  where the mean flags the image); None unless every model has them."""
  if not scores or any(s is None for s in scores):
    return None
  ood_score = np.mean([s["ood_score"] for s in scores], axis=0)
  cell = np.max([s["cell"] for s in scores], axis=0)
  worst = np.argmax([s["ood_score"] for s in scores], axis=0)
  flag = np.array([s["flag"] for s in scores])[worst, np.arange(len(worst))]
  flag = np.where(ood_score >= 1.0, np.where(flag == "ok", "uncertain", flag), "ok")
  return {"ood_score": ood_score, "cell": cell,
          "flag": np.where(cell >= 1.0, "not_a_cell", flag)}


def _flagged(trust: dict) -> str:
  from bloodcell_jax.evaluation import ood  # pylint: disable=g-import-not-at-top
  flags = trust["flag"]
  why = ", ".join(f"{int(np.sum(flags == f))} {f}" for f in ood.FLAGS[1:] if np.any(flags == f))
  return (f"flagged {int(np.sum(flags != 'ok'))} of {len(flags)}" + (f" ({why})" if why else "")
          + (", left unpredicted (--abstain)" if _ABSTAIN.value else ""))


def _no_trust(sources, predicted) -> str:
  missing = [f"{flag}={source}" for (flag, source, _), p in zip(sources, predicted)
             if p.trust is None]
  return (f"no trust flags: no out-of-distribution model for {', '.join(missing)} (a run "
          "trained before ood.npz existed, or a file exported from one)")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
