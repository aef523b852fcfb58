"""The model registry: a config names a model with a string, and the registry says what the rest of
the library needs to know about it.

A family registers one `ModelSpec` per name in `MODELS` (a `Registry`): how to build the flax
module, which top-level modules are its classifier head (re-initialised when starting from other
weights), whether its BatchNorm layers can run frozen (inference mode while training), and, for
models ported from `keras.applications`, a `KerasPort` (layer order for first-N freezing, layer
names for the weight port). Training, freezing and the weight port read only the spec, so a model
defined anywhere (a test, a user's script) works once it is registered.
"""

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bloodcell_jax import runtime
from bloodcell_jax.errors import UserError, innermost_line
from bloodcell_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class KerasPort:
  """How a model corresponds to a `keras.applications` model, layer by layer.

  layers(include_top, model_args): `model.layers` of the Keras model as (name, has weights),
    in order, weightless layers included (they count in Keras's `layers[:N]`), for a model
    built with `model_args` (config.model's constructor arguments).
  module_path(layer): the Flax module path ("block2b/expand_bn") holding a Keras layer's weights.
  sublayers(layer): the layers holding the weights of a nested Keras layer (a `Sequential`
    inside the model), else just the layer.
  weight_names: regexes of Keras weight names to Flax parameter names, beyond the usual ones
    (kernel, bias, gamma, beta, moving_mean, moving_variance).
  application: the keras.applications constructor, for reading Keras 3 `.weights.h5` files.
  fixed_layers: preprocessing layers that some files store although their weights are fixed by
    the architecture ({layer: {weight: value}}); the port checks them and maps nothing.
  top_layer: the Keras classifier layer (a file holding it was saved with the top).
  weights_url(include_top): where keras.applications downloads the ImageNet file ("" if none).
  """
  layers: Callable[[bool, Mapping[str, Any]], Sequence[Tuple[str, bool]]]
  module_path: Callable[[str], str]
  application: str
  fixed_layers: Mapping[str, Mapping[str, Sequence[float]]] = dataclasses.field(
      default_factory=dict)
  sublayers: Callable[[str], Tuple[str, ...]] = lambda layer: (layer,)
  weight_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
  top_layer: str = "predictions"
  weights_url: Callable[[bool], str] = lambda include_top: ""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the library knows of a registered model.

  build(num_classes=..., **constructor arguments) -> flax module, called with float images in
    [0, 255] (N, H, W, 3) and `train`, returning logits (or features without a head).
  head: top-level module names of the classifier head.
  frozen_batch_norm: the module accepts `frozen_bn`, a tuple of BatchNorm module paths
    ("block2b/expand_bn") that run on their running statistics while training.
  keras: the Keras correspondence of a ported model, else None.
  pretrained: whether ImageNet weights exist for it (a run without them says so loudly).
  defaults: the constructor arguments a config sets (`config.model`), with their defaults.
  """
  name: str
  build: Callable[..., nn.Module]
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  head: Tuple[str, ...] = ()
  frozen_batch_norm: bool = False
  keras: Optional[KerasPort] = None
  pretrained: bool = False


MODELS = Registry("model", where="config.model.name")


def register(name: str, **spec_fields):
  """Decorator registering `build` under `name`, with ModelSpec's other fields."""
  def decorator(build):
    MODELS.register(name, ModelSpec(name=name, build=build, **spec_fields))
    return build
  return decorator


def get_spec(name: str, where: str = "config.model.name") -> ModelSpec:
  return MODELS.get(name, where)


def get_model(name: str, **kwargs) -> nn.Module:
  return get_spec(name).build(**kwargs)


def build_model(config, num_classes: int, **overrides) -> nn.Module:
  """The model `config.model` describes: its `name`, and constructor arguments for the rest."""
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  kwargs.update(overrides)
  for key in ("dtype", "param_dtype"):
    kwargs[key] = _dtype(key, kwargs.get(key, "float32"))
  return get_model(config.model.name, num_classes=num_classes, **kwargs)


def check_buildable(config, num_classes: int) -> None:
  """`config.model` checked before any data is read: each argument of the type of the model's
  default for it, and the model's variables shaped (abstractly, no compute) at the config's
  image size, so that a value no layer accepts is one line here, not a JAX error later."""
  spec = get_spec(config.model.name)
  for key, value in config.model.items():
    if key in spec.defaults and not _same_kind(value, spec.defaults[key]):
      raise UserError(f"config.model.{key}={value!r}: expected a value like "
                      f"{spec.defaults[key]!r}")
  model = build_model(config, num_classes)
  try:
    _trace_init(model, config.image_size)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (whatever the layers raise)
    changed = ", ".join(f"config.model.{k}={v!r}" for k, v in config.model.items()
                        if k in spec.defaults and v != spec.defaults[k])
    raise UserError(f"{changed or 'config.model'}: {config.model.name} cannot be built at "
                    f"image_size={config.image_size} ({innermost_line(e)})") from None


@functools.lru_cache(maxsize=64)
def _trace_init(model: nn.Module, image_size: int) -> None:
  """Traces the model's initialisation without computing it (once per model and size: a
  sweep's runs mostly share theirs)."""
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # abstract: no backend is started
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  jax.eval_shape(lambda k, x: model.init({"params": k, "dropout": k}, x), key, images)


def _same_kind(value, default) -> bool:
  """Whether a config value has the type of the model's default (ints pass for floats)."""
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, int):
    return isinstance(value, int)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, str):
    return isinstance(value, str)
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list)) and all(
        _same_kind(v, default[0]) for v in value) if default else isinstance(value, (tuple, list))
  return True


AUTO_DTYPE = "auto"


def automatic_compute_dtype() -> jnp.dtype:
  """config.model.dtype="auto": bfloat16 where the model runs on a CPU with bfloat16
  dot-product instructions (faster for the models made mostly of matrix products, such as
  EfficientNetV2 and ConvNeXt: docs/performance.md), float32 elsewhere (choose bfloat16 on a
  GPU or TPU yourself)."""
  if jax.default_backend() == "cpu" and runtime.cpu_multiplies_bfloat16():
    return jnp.dtype(jnp.bfloat16)
  return jnp.dtype(jnp.float32)


def _dtype(key: str, name) -> jnp.dtype:
  if key == "dtype" and name == AUTO_DTYPE:
    return automatic_compute_dtype()
  try:
    dtype = jnp.dtype(name)
  except TypeError:
    raise UserError(f"config.model.{key}='{name}': expected a float dtype such as float32, "
                    "bfloat16 or float64" + (" (or auto)" if key == "dtype" else "")) from None
  if jax.dtypes.canonicalize_dtype(dtype) != dtype:  # float64 without x64 would be float32
    raise UserError(f"config.model.{key}=float64: needs 64-bit JAX (set JAX_ENABLE_X64=1)")
  return dtype


def model_names():
  return sorted(MODELS.names())


def keras_ported_names():
  """The registered models that have a Keras port."""
  return [name for name in model_names() if MODELS.get(name).keras is not None]
