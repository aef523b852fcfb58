"""Port `keras.applications` weights into this project's Flax modules, by layer and weight name.

Which Keras layer lands in which Flax module is the model's registry entry (`KerasPort`);
everything here is the same for every ported family.

Three Keras files are read:
  * legacy HDF5 weight files (the official ImageNet `efficientnetv2-s_notop.h5`
    etc.): root attribute `layer_names`, one group per layer whose
    `weight_names` are `layer/weight` (`:0` suffixed in Keras 2 files; a nested
    layer's `outer/inner/weight` belongs to `inner`);
  * Keras full-model `.h5` files: the same under `model_weights/`;
  * Keras 3 `.weights.h5` files, which name variables by class and position
    only: they are loaded into the matching `keras.applications` model first.
Every tensor is placed by name and shape-checked; any file tensor without a
place, or model variable without a tensor, is an error that lists them.

CLI: python -m bloodcell_jax.weights.keras_port --model=efficientnetv2-s \\
       --keras_weights=efficientnetv2-s_notop.h5 --out=DIR
"""

import functools
import inspect
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Dict, Optional, Tuple

import h5py
import jax
import numpy as np
from flax import traverse_util

from bloodcell_jax import models
from bloodcell_jax.errors import UserError

# A mirror of the official files (a URL ending in "/"), used instead of Keras's servers.
MIRROR_VARIABLE = "BLOODCELL_JAX_KERAS_WEIGHTS_URL"
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "bloodcell_jax", "keras_weights")

# Keras weight name -> (Flax collection, Flax variable name).
_RENAME = {
    "kernel": ("params", "kernel"),
    "bias": ("params", "bias"),
    "depthwise_kernel": ("params", "kernel"),
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}

KerasWeights = Dict[str, Dict[str, np.ndarray]]  # layer name -> weight name -> array


def _text(value) -> str:
  return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _layer_and_weight(layer: str, full_name: str) -> Tuple[str, str]:
  """(the layer holding it, weight) of a stored weight name: `block1a_project_bn/gamma:0` ->
  (`block1a_project_bn`, `gamma`); a nested layer's `stem/stem_conv/kernel` -> (`stem_conv`,
  `kernel`); a bare `gamma` belongs to `layer`."""
  parts = full_name.split(":")[0].split("/")
  return (parts[-2] if len(parts) > 1 else layer), parts[-1]


def read_named_h5(path: str) -> Optional[KerasWeights]:
  """Layer-named weights of a legacy weights file or full-model `.h5`; None for `.weights.h5`."""
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise UserError(f"{path}: not a readable HDF5 file ({e})") from None
  with f:
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in group.attrs:
      return None
    weights = {}
    for layer in map(_text, group.attrs["layer_names"]):
      for name in map(_text, group[layer].attrs.get("weight_names", [])):
        owner, weight = _layer_and_weight(layer, name)
        weights.setdefault(owner, {})[weight] = np.asarray(group[layer][name])
    return weights


def _keras3_classes(constructor, top_layer: str, path: str) -> Optional[int]:
  """Number of classes of a `.weights.h5` saved with the top, else None.

  Keras 3 files key each layer by its class name numbered in the model's order ("dense_36"),
  so the top layer's key is found on a one-class model built the same way.
  """
  from keras.src.utils import naming  # pylint: disable=g-import-not-at-top
  probe = constructor(weights=None, include_top=True, classes=1, classifier_activation=None)
  seen, key = {}, None
  for layer in probe.layers:
    kind = naming.to_snake_case(type(layer).__name__)
    if layer.name == top_layer:
      key = kind if not seen.get(kind) else f"{kind}_{seen[kind]}"
    seen[kind] = seen.get(kind, 0) + 1
  with h5py.File(path, "r") as f:
    bias = f.get(f"layers/{key}/vars/1")
    return None if bias is None else int(bias.shape[-1])


def _architecture_args(model_args) -> dict:
  """The constructor arguments that shape the variables (a width multiplier, a variant), not
  the head: the port builds the head the file holds."""
  return {k: v for k, v in dict(model_args or {}).items()
          if k not in ("name", "head", "pooling", "num_classes", "include_top")}


def read_keras3_weights(model_name: str, path: str, model_args=None) -> KerasWeights:
  """A Keras 3 `.weights.h5`, through the keras.applications model it was saved from."""
  try:
    import keras  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"{path}: a Keras 3 .weights.h5 file names no layers, so reading it needs "
                    "keras installed (pip install keras)") from None
  correspondence = keras_port(model_name)
  constructor = getattr(keras.applications, correspondence.application)
  # Keras's own arguments among the model's (MobileNetV3's alpha and minimalistic).
  accepted = inspect.signature(constructor).parameters
  shared = {k: v for k, v in _architecture_args(model_args).items() if k in accepted}
  constructor = functools.partial(constructor, **shared)
  classes = _keras3_classes(constructor, correspondence.top_layer, path)
  kwargs = (dict(include_top=True, classes=classes, classifier_activation=None) if classes
            else dict(include_top=False, input_shape=(None, None, 3)))
  model = constructor(weights=None, **kwargs)
  try:
    with warnings.catch_warnings():  # one per layer that does not fit: the error says it
      warnings.simplefilter("ignore")
      model.load_weights(path)
  except ValueError as e:
    raise UserError(f"{path}: does not fit keras.applications.{correspondence.application} "
                    f"({str(e).splitlines()[0]}); is --model right?") from None
  weights = {}
  for variable in model.weights:  # path: [model layer/]layer/weight
    owner, weight = variable.path.split("/")[-2:]
    weights.setdefault(owner, {})[weight] = np.asarray(variable.numpy())
  return weights


def keras_port(model_name: str) -> models.KerasPort:
  """The registry's Keras correspondence of `model_name`; a UserError if it has none."""
  ported = models.keras_ported_names()
  if model_name not in ported:
    raise UserError(f"--model={model_name}: expected one of {', '.join(ported)}")
  return models.get_spec(model_name).keras


def read_keras_weights(model_name: str, path: str, model_args=None) -> KerasWeights:
  keras_port(model_name)
  if not os.path.isfile(path):
    raise UserError(f"--keras_weights={path}: no such file")
  weights = read_named_h5(path)
  return weights if weights is not None else read_keras3_weights(model_name, path, model_args)


def _check_fixed_layer(model_name: str, layer: str, weights: Dict[str, np.ndarray],
                       path: str):
  """Keras 2 files may store preprocessing the architecture fixes; it must be that."""
  expected = keras_port(model_name).fixed_layers[layer]
  for name, value in weights.items():
    if name in expected and not np.allclose(np.ravel(value), expected[name], atol=1e-6):
      raise UserError(f"{path}: its '{layer}' layer ({name}) differs from {model_name}'s "
                      "built-in input preprocessing")


def _target_shapes(model_name: str, include_top: bool, num_classes: int, model_args=None):
  model = models.get_model(model_name, num_classes=num_classes, include_top=include_top,
                           **_architecture_args(model_args))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                np.zeros((1, 64, 64, 3), np.float32)))
  return {(collection, path): leaf.shape
          for collection in ("params", "batch_stats")
          for path, leaf in traverse_util.flatten_dict(variables.get(collection, {}),
                                                              sep="/").items()}


def port(model_name: str, keras_weights: KerasWeights, source: str = "weights", model_args=None):
  """Flax variables {"params", "batch_stats"} and whether they include the classifier, for the
  model built with `model_args` (constructor arguments such as MobileNetV3's alpha)."""
  correspondence = keras_port(model_name)
  keras_weights = dict(keras_weights)
  for layer in correspondence.fixed_layers:
    if layer in keras_weights:
      _check_fixed_layer(model_name, layer, keras_weights.pop(layer), source)
  top = keras_weights.get(correspondence.top_layer)
  include_top = top is not None
  num_classes = int(top["bias"].shape[0]) if include_top and "bias" in top else 1000
  shapes = _target_shapes(model_name, include_top, num_classes, model_args)
  flat, unmatched = {}, []
  for layer, layer_weights in keras_weights.items():
    module = correspondence.module_path(layer)
    for weight, value in layer_weights.items():
      collection, name = _RENAME.get(weight, (None, None))
      for pattern, param in correspondence.weight_names.items():
        if re.fullmatch(pattern, weight):
          collection, name = "params", param
      key = (collection, f"{module}/{name}")
      if key not in shapes:
        unmatched.append(f"{layer}/{weight}")
        continue
      if _is_depthwise(value, shapes[key]):  # Keras (k, k, C, 1) -> Flax (k, k, 1, C)
        value = np.swapaxes(value, 2, 3)
      if value.shape != shapes[key]:
        raise UserError(f"{source}: {layer}/{weight} has shape {value.shape}, {model_name} "
                        f"expects {shapes[key]} at {'/'.join(key)}; is --model right?")
      flat[key] = value.astype(np.float32)
  missing = sorted("/".join(k) for k in shapes if k not in flat)
  if unmatched or missing:
    raise UserError(f"{source}: does not match {model_name}: " + "; ".join(
        f"{what} ({len(names)}): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
        for what, names in (("file tensors with no place in the model", unmatched),
                            ("model variables missing from the file", missing)) if names))
  variables = {c: traverse_util.unflatten_dict(
      {path: v for (col, path), v in flat.items() if col == c}, sep="/")
               for c in ("params", "batch_stats")}
  return variables, include_top


def _is_depthwise(value: np.ndarray, target: Tuple[int, ...]) -> bool:
  """A Keras depthwise kernel (k, k, C, 1) bound for this project's layout (k, k, 1, C)."""
  return (value.ndim == 4 and value.shape[3] == 1 and value.shape[2] > 1
          and tuple(target) == (*value.shape[:2], 1, value.shape[2]))


def load_keras_weights(model_name: str, path: str, model_args=None) -> Dict[str, dict]:
  """{"params", "batch_stats"} for `models.get_model(model_name, include_top=...)`.

  include_top follows the file: True when it holds the `predictions` layer
  (num_classes then is that layer's width).
  """
  return port(model_name, read_keras_weights(model_name, path, model_args), path, model_args)[0]


# Every HDF5 file (Keras's .h5 weights) starts with this signature.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# A download that brings fewer bytes than this in `stall_seconds` has stalled, however
# steadily it trickles.
_MIN_BYTES_PER_WINDOW = 64 * 1024


def download_keras_weights(model_name: str, include_top: bool, stall_seconds: float = 30.0,
                           mirror: Optional[str] = None, cache_dir: str = CACHE_DIR) -> str:
  """The official ImageNet file, downloaded once into `cache_dir` (from `mirror`, or the
  $BLOODCELL_JAX_KERAS_WEIGHTS_URL mirror, when given). Fails with advice when the server
  cannot be reached, sends less than 64 KiB in any `stall_seconds`, or sends something that
  is not an HDF5 file (which is then not kept)."""
  url = keras_port(model_name).weights_url(include_top)
  if not url:
    raise UserError(f"--download: no official ImageNet file for {model_name}")
  file_name = url.rsplit("/", 1)[-1]
  mirror = mirror if mirror is not None else os.environ.get(MIRROR_VARIABLE)
  if mirror:
    url = mirror + file_name
  path = os.path.join(cache_dir, file_name)
  if os.path.isfile(path):
    if _is_hdf5(path):
      return path
    logging.warning("%s: not an HDF5 file (a damaged earlier download); downloading it again",
                    path)
  os.makedirs(cache_dir, exist_ok=True)
  partial = f"{path}.{os.getpid()}.partial"
  advice = f"On a machine with network access, fetch {url} and pass the file with " \
           "--keras_weights=PATH"
  try:
    with urllib.request.urlopen(url, timeout=stall_seconds) as response, \
        open(partial, "wb") as f:
      _copy_unless_stalled(response, f, stall_seconds)
    if not _is_hdf5(partial):
      with open(partial, "rb") as f:
        start = f.read(40).decode("ascii", "replace").split("\n")[0]
      raise UserError(f"--download: {urllib.parse.urlparse(url).hostname} answered with "
                      f"something that is not an HDF5 file (it starts {start!r}). {advice}")
    os.replace(partial, path)
  except (OSError, urllib.error.URLError) as e:  # socket.timeout is an OSError
    raise UserError(f"--download: no file from {urllib.parse.urlparse(url).hostname} ({e}). "
                    f"{advice}") from None
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return path


def _copy_unless_stalled(response, out, stall_seconds: float) -> None:
  window_start, window_bytes = time.monotonic(), 0
  while True:
    chunk = response.read1(1 << 20)  # whatever has arrived, up to 1 MiB
    if not chunk:
      return
    out.write(chunk)
    window_bytes += len(chunk)
    if time.monotonic() - window_start >= stall_seconds:
      if window_bytes < _MIN_BYTES_PER_WINDOW:
        raise TimeoutError(f"stalled: {window_bytes} bytes in {stall_seconds:.0f} s")
      window_start, window_bytes = time.monotonic(), 0


def _is_hdf5(path: str) -> bool:
  with open(path, "rb") as f:
    return f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


if __name__ == "__main__":  # the command's old name; the program is bloodcell_jax/cli/port_keras.py
  from bloodcell_jax.cli import port_keras  # pylint: disable=g-import-not-at-top
  port_keras.run()
