"""Few-shot adaptation of a trained run to a new lab: fine-tune it on k labelled images per class.

  python launch.py --config=configs/adapt.py:runs/cnn_robust --workdir=runs/adapt_lab2 \
      --config.data.train=lab2_k10/ --config.data.test=lab2_rest/

The part after ':' is the trained run (its workdir); its own config (config.json) is the
starting point, so the model is built exactly as it was trained and starts from its
best checkpoint, head included. Then, for a handful of images (10 per class: minutes on
a CPU):
- no validation split (there are too few images to spare): a fixed number of steps,
  the last checkpoint is the result; pass the rest of the lab's labelled images, if
  any, as data.test to measure;
- the lab's folders may hold only some of the run's classes (its class order is kept);
- a learning rate 20x below training, constant, no label smoothing;
- the run's own augmentation (for configs/cnn_robust.py: the shift families), and
  batches of 16, so each image is seen about 40 times.
Freeze everything but the head with
  --config.optim.freeze="'(dense|logits|head_dense|predictions)/.*=train', '.*=freeze'"
when even fewer images are labelled. Without a run after ':', it starts from
configs/cnn_robust.py's model (pass --config.init.weights=RUN yourself).
"""

import json
import os

import ml_collections

from bloodcell_jax.config import recorded
from configs import cnn_robust, default


def _as_tuples(value):
  if isinstance(value, dict):
    return {k: _as_tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_as_tuples(v) for v in value)
  return value


def _with_defaults(recorded: dict, defaults: dict) -> dict:
  """`recorded` with the keys it lacks (newer than the run) taken from `defaults`."""
  merged = dict(recorded)
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = value
    elif isinstance(value, dict) and isinstance(merged[key], dict):
      merged[key] = _with_defaults(merged[key], value)
  return merged


def recorded_config(run: str):
  """The config a trained run recorded (its config.json, in today's form, with the keys newer
  than the run at their defaults), with its classes (split_manifest.json)."""
  path = os.path.join(run, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: missing; after ':' name a training run's workdir")
  with open(path) as f:
    config = recorded.upgrade_recorded(json.load(f))
  # The model's keys are its own, and the evaluators those the run asked for.
  defaults = {k: v for k, v in default.get_config().to_dict().items()
              if k not in ("model", "evals", "stages")}
  # JSON gives lists, which --config.KEY cannot override; the recipes use tuples.
  config = ml_collections.ConfigDict(_as_tuples(_with_defaults(config, defaults)))
  with open(os.path.join(run, "split_manifest.json")) as f:
    config.data.class_names = tuple(json.load(f)["class_names"])
  return config


def starting_from(run: str, recipe):
  """What both adaptation recipes start from: the run's recorded config and weights (or
  `recipe`'s config, when no run is named), its trained head kept, no stages, and fine-tuning
  at a constant learning rate 20x below training, without early stopping, a weight average or
  offline copies."""
  if run:
    config = recorded_config(run)
    config.init.weights = run
  else:
    config = recipe.get_config()
  config.stages = ml_collections.ConfigDict()
  config.init.head = "keep"  # the same classes: the trained head is the best start
  config.data.offline_copies = 0
  config.optim.schedule = "constant"
  config.optim.learning_rate = 1e-4
  config.train.early_stopping_patience = 0
  config.train.ema_decay = 0.0
  return config


def get_config(run: str = ""):
  config = starting_from(run, cnn_robust)
  # The lab may label only some of the run's classes (white cells only): its folders are read
  # in the run's class order, and the model keeps every output.
  config.data.folders_use_class_names = True
  config.data.val = ""
  config.data.val_fraction = 0.0
  config.data.test = ""
  config.data.clean = False
  config.num_epochs = 40  # with k=10 and 8 classes, 200 steps of 16
  config.batch_size = 16
  config.eval_batch_size = 64
  config.loss.label_smoothing = 0.0
  config.train.log_every_steps = 20
  return config
