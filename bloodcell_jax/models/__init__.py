"""Model registry: a config names a model with a string."""

from typing import Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from bloodcell_jax.errors import UserError

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
  def decorator(factory):
    _MODELS[name] = factory
    return factory
  return decorator


def get_model(name: str, **kwargs) -> nn.Module:
  _import_all()
  if name not in _MODELS:
    raise UserError(f"config.model.name='{name}': unknown model (known: {', '.join(sorted(_MODELS))})")
  return _MODELS[name](**kwargs)


# Keys of `config.model` that say where weights come from, not what the module is.
_NOT_CONSTRUCTOR_ARGS = ("name", "init_from", "init_head", "frozen_bn_mode")


def build_model(config, num_classes: int, **overrides) -> nn.Module:
  """The model `config.model` describes (its other keys are constructor arguments)."""
  kwargs = {k: v for k, v in config.model.items() if k not in _NOT_CONSTRUCTOR_ARGS}
  kwargs.update(overrides)
  for key in ("dtype", "param_dtype"):
    kwargs[key] = _dtype(key, kwargs.get(key, "float32"))
  return get_model(config.model.name, num_classes=num_classes, **kwargs)


def _dtype(key: str, name) -> jnp.dtype:
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    raise UserError(f"config.model.{key}='{name}': expected a float dtype such as float32, "
                    "bfloat16 or float64") from None
  if jax.dtypes.canonicalize_dtype(dtype) != dtype:  # float64 without x64 would be float32
    raise UserError(f"config.model.{key}=float64: needs 64-bit JAX (set JAX_ENABLE_X64=1)")
  return dtype


def model_names():
  _import_all()
  return sorted(_MODELS)


def _import_all():
  # pylint: disable=g-import-not-at-top,unused-import
  from bloodcell_jax.models import cnn, efficientnet_v2
