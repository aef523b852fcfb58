"""Model registry: a config names a model with a string."""

from typing import Callable, Dict

import flax.linen as nn

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


def _import_all():
  from bloodcell_jax.models import cnn  # pylint: disable=g-import-not-at-top,unused-import
