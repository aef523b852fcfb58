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
class's probability) and `p_<class>` for every class. A folder may hold images
directly or in sub-folders (an ImageFolder); every image under it is predicted.
"""

from absl import flags

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "A training run's workdir; repeat it to "
                                     "average the probabilities of several runs.")
_MODEL = flags.DEFINE_multi_string("model", None, "An exported model (bloodcell-export); "
                                   "repeat it, or add --workdir, to average several.")
_INPUT = flags.DEFINE_string("input", None, "Image folder or .npz to predict.")
_OUTPUT = flags.DEFINE_string("output", "predictions.csv", "CSV file to write.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per forward pass.", lower_bound=1)
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
_ADAPT_BN = flags.DEFINE_bool("adapt_bn", False, "Recompute the BatchNorm statistics on the "
                              "input images before predicting them (AdaBN: for images from "
                              "another microscope, camera or stain; needs a few dozen images "
                              "or more).")


def _check_classes(class_names) -> None:
  """--classes checked against a model's classes before any image is read."""
  from bloodcell_jax.evaluation import labelled_set  # pylint: disable=g-import-not-at-top
  if _CLASSES.value:
    labelled_set.restriction(class_names, _CLASSES.value)


def run_probabilities(workdir: str, input_path: str):
  """(ids, class names, probabilities, which weights) of one run on `input_path`, as the flags
  ask."""
  from bloodcell_jax.evaluation import adaptation, inference  # pylint: disable=g-import-not-at-top
  config, class_names, model, state, weights = inference.load_run(workdir, _EMA.value)
  _check_classes(class_names)
  temperature = inference.run_temperature(workdir, _EMA.value) if _CALIBRATED.value else 1.0
  ids, images = inference.read_unlabelled(input_path, config.image_size)
  if _ADAPT_BN.value:
    state = adaptation.adapt_batch_stats(model, state, images, _BATCH_SIZE.value)
  probabilities = inference.predict(model, state, images, _BATCH_SIZE.value, _TTA.value,
                                    temperature)
  return ids, class_names, probabilities, weights.describe()


def model_probabilities(path: str, input_path: str):
  """(ids, class names, probabilities, which weights) of an exported model on `input_path`."""
  from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.export import runtimes  # pylint: disable=g-import-not-at-top
  model = runtimes.load(path)
  _check_classes(model.metadata["class_names"])
  ids, images = inference.read_unlabelled(input_path, model.metadata["image_size"])
  return (ids, model.metadata["class_names"], model.predict(images, _BATCH_SIZE.value),
          runtimes.weights_described(model.metadata))


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
  (first_flag, first, first_probabilities_of), *rest = sources
  ids, class_names, total, weights = first_probabilities_of(first, _INPUT.value)
  used = [weights]
  for flag, source, probabilities_of in rest:
    _, names, probabilities, weights = probabilities_of(source, _INPUT.value)
    used.append(weights)
    if list(names) != list(class_names):
      raise UserError(f"{flag}={source}: its classes {list(names)} are not those of "
                      f"{first_flag}={first} {list(class_names)}; an ensemble needs "
                      "the same classes in the same order")
    total = total + probabilities
  total = total / len(sources)
  restricted = ""
  if _CLASSES.value:
    kept = labelled_set.restriction(class_names, _CLASSES.value)
    total = labelled_set.restrict_probabilities(total, kept)
    restricted = f", restricted to {', '.join(class_names[i] for i in kept)}"
  predictions.write_probabilities(_OUTPUT.value, ids, total, class_names)
  runs = f" (mean of {len(sources)} models)" if len(sources) > 1 else ""
  print(f"wrote {len(ids)} predictions to {_OUTPUT.value}{runs}{restricted}; weights: "
        + " | ".join(used))


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
