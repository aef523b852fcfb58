"""Which parameters train: rules over parameter paths, and the study's "first N Keras layers".

`config.optim.freeze` holds rules (regex, "freeze" | "train"), first match wins (see
`param_rules`). `config.optim.freeze_keras_layers=N` freezes the parameters of the
backbone's Keras layers `model.layers[:N]` (Python slice semantics: N=480 freezes the
first 480 of EfficientNetV2-S's 513, N=-30 all but the last 30), exactly the weights Keras
leaves untrainable after `for l in base.layers[:N]: l.trainable = False`; it needs a model
whose registry entry has a Keras port. Both become one label tree that drives the optax mask.

BatchNorm layers whose parameters are all frozen also run in inference mode while
training (Keras semantics), unless `config.init.frozen_bn_mode="train"`.
"""

import re
from typing import Optional, Tuple

from flax import traverse_util

from bloodcell_jax import models
from bloodcell_jax.errors import UserError
from bloodcell_jax.training import param_rules

FREEZE, TRAIN = "freeze", "train"


def keras_layer_modules(model_name: str, first_n: int, model_args=None) -> Tuple[str, ...]:
  """Flax module paths of the weighted layers among the backbone's Keras `layers[:first_n]`
  (of the model built with `model_args`, config.model's constructor arguments)."""
  port = models.get_spec(model_name).keras
  if port is None:
    raise UserError(f"config.optim.freeze_keras_layers needs a model ported from Keras "
                    f"({', '.join(models.keras_ported_names())}), not '{model_name}'")
  layers = port.layers(False, dict(model_args or {}))
  return tuple(port.module_path(sublayer) for name, weighted in layers[:first_n]
               if weighted for sublayer in port.sublayers(name))


def freeze_rules(config):
  """The config's freezing as (regex, value) rules: its own first, then the Keras layers'."""
  rules = param_rules.parse(config.optim.freeze, "config.optim.freeze",
                            param_rules.choice(TRAIN, FREEZE))
  first_n = config.optim.freeze_keras_layers
  if first_n:
    rules += [(re.compile(re.escape(module) + "/.*"), FREEZE)
              for module in keras_layer_modules(config.model.name, first_n, config.model)]
    rules.append((re.compile(".*"), TRAIN))
  return rules


def freeze_labels(config, params) -> Optional[dict]:
  """Per-parameter "train" / "freeze" (a tree like `params`), or None when all train."""
  rules = freeze_rules(config)
  if not rules:
    return None
  return param_rules.resolve(params, rules, "config.optim.freeze")


def frozen_batchnorm_layers(labels, batch_stats) -> Tuple[str, ...]:
  """Module paths of the BatchNorm layers (modules with running statistics) whose
  parameters are all frozen."""
  if labels is None:
    return ()
  per_module = {}
  for path, value in traverse_util.flatten_dict(labels, sep="/").items():
    per_module.setdefault(path.rsplit("/", 1)[0], set()).add(value)
  layers = {path.rsplit("/", 1)[0] for path in traverse_util.flatten_dict(batch_stats, sep="/")}
  return tuple(sorted(layer for layer in layers if per_module.get(layer) == {FREEZE}))


def apply_frozen_batchnorm(model, config, labels, batch_stats):
  """The model with its frozen BatchNorm layers in inference mode, where it supports that."""
  mode = config.init.frozen_bn_mode
  frozen = frozen_batchnorm_layers(labels, batch_stats)
  if mode == "train" or not frozen or not models.get_spec(config.model.name).frozen_batch_norm:
    return model
  return model.clone(frozen_bn=frozen)


def count(labels, params) -> Tuple[int, int]:
  """(trainable, frozen) numbers of parameter values."""
  sizes = traverse_util.flatten_dict(params, sep="/")
  flat = traverse_util.flatten_dict(labels, sep="/") if labels is not None else {}
  frozen = sum(int(getattr(v, "size", 0)) for p, v in sizes.items() if flat.get(p) == FREEZE)
  total = sum(int(getattr(v, "size", 0)) for v in sizes.values())
  return total - frozen, frozen
