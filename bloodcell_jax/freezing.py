"""Which parameters train: regex rules over parameter paths, and the study's "first N Keras layers".

`config.optim.freeze` holds rules `pattern=freeze|train` (first match wins);
`config.optim.freeze_keras_layers=N` adds the parameters of the backbone's
Keras layers `model.layers[:N]` (Python slice semantics: N=480 freezes the
first 480 of EfficientNetV2-S's 513, N=-30 all but the last 30), exactly the
weights Keras leaves untrainable after `for l in base.layers[:N]:
l.trainable = False`. Both become one label tree that drives the optax mask.

BatchNorm layers whose parameters are frozen also run in inference mode while
training (Keras semantics), unless `config.model.frozen_bn_mode="train"`.
"""

import dataclasses
import re
from typing import Optional, Tuple

from flax import traverse_util

from bloodcell_jax import param_rules
from bloodcell_jax.errors import UserError
from bloodcell_jax.models import efficientnet_v2 as effnet

FREEZE, TRAIN = "freeze", "train"


def keras_layer_modules(model_name: str, first_n: int) -> Tuple[str, ...]:
  """Flax module paths of the weighted layers among the backbone's Keras `layers[:first_n]`."""
  if model_name not in effnet.VARIANTS:
    raise UserError(f"config.optim.freeze_keras_layers needs a model ported from Keras "
                    f"({', '.join(effnet.VARIANTS)}), not '{model_name}'")
  layers = effnet.keras_layers(effnet.VARIANTS[model_name], include_top=False)
  return tuple(effnet.keras_to_flax_path(name) for name, weighted in layers[:first_n] if weighted)


def freeze_rules(config):
  """The config's freezing as (regex, value) rules: its own rules first, then Keras layers."""
  rules = param_rules.parse_rules(config.optim.freeze, (TRAIN, FREEZE), "config.optim.freeze")
  first_n = config.optim.get("freeze_keras_layers", 0)
  if first_n:
    modules = keras_layer_modules(config.model.name, first_n)
    if modules:
      rules.append((re.compile("(" + "|".join(map(re.escape, modules)) + ")/.*"), FREEZE))
  return rules


def freeze_labels(config, params) -> Optional[dict]:
  """Per-parameter "train" / "freeze" (a tree like `params`), or None when all train."""
  rules = freeze_rules(config)
  if not rules:
    return None
  return param_rules.label_params(params, rules, default=TRAIN)


def frozen_batchnorm_layers(labels) -> Tuple[str, ...]:
  """Keras names of the BatchNorm layers whose scale is frozen (`block2b_expand_bn`)."""
  if labels is None:
    return ()
  flat = traverse_util.flatten_dict(labels, sep="/")
  return tuple(sorted(path[:-len("/scale")].replace("/", "_") for path, value in flat.items()
                      if path.endswith("/scale") and value == FREEZE))


def apply_frozen_batchnorm(model, config, labels):
  """The model with its frozen BatchNorm layers in inference mode, where it supports that."""
  mode = config.model.get("frozen_bn_mode", "inference")
  if mode not in ("inference", "train"):
    raise UserError(f"config.model.frozen_bn_mode='{mode}': expected inference or train")
  supports = "frozen_bn" in {f.name for f in dataclasses.fields(model)}
  frozen = frozen_batchnorm_layers(labels)
  if mode == "train" or not supports or not frozen:
    return model
  return model.clone(frozen_bn=frozen)


def count(labels, params) -> Tuple[int, int]:
  """(trainable, frozen) numbers of parameter values."""
  sizes = traverse_util.flatten_dict(params, sep="/")
  flat = traverse_util.flatten_dict(labels, sep="/") if labels is not None else {}
  frozen = sum(int(getattr(v, "size", 0)) for p, v in sizes.items() if flat.get(p) == FREEZE)
  total = sum(int(getattr(v, "size", 0)) for v in sizes.values())
  return total - frozen, frozen
