"""Start a run from existing weights: a Keras file, a ported checkpoint, or an earlier run.

Every backbone variable of the new model must be found, with its shape, in the
source; the classifier head (the registry's `head` of the model) is freshly initialised
unless `keep_head` (then it must match too). Anything else is an error that
names the variables, so a wrong model or file never half-loads.
"""

import logging
import os
from typing import Dict, Tuple

import numpy as np
from flax import traverse_util

from bloodcell_jax.errors import UserError
from bloodcell_jax.training import checkpoint
from bloodcell_jax.weights import keras_port


def load_variables(path: str, model_name: str, where: str = "config.init.weights",
                   ema: bool = False, model_args=None) -> Dict[str, dict]:
  """{"params", "batch_stats"} from `path`, whichever of the three kinds it is; with `ema`,
  a run's moving average of the weights. A Keras file is read for the model built with
  `model_args` (config.model)."""
  path = os.path.expanduser(path)
  if path.endswith(".h5"):
    return keras_port.load_keras_weights(model_name, path, model_args)
  if os.path.isfile(os.path.join(path, checkpoint.PORT_RECORD)):
    variables, record = checkpoint.load_ported(path)
    if record.get("model") != model_name:
      raise UserError(f"{where}={path}: holds {record.get('model')} weights, "
                      f"config.model.name is {model_name}")
    return variables
  weights = checkpoint.run_variables(path, where, ema)
  if weights is not None:
    if weights.skipped:
      logging.warning("%s=%s: took the %s", where, path, weights.describe())
    return weights.variables
  raise UserError(f"{where}={path}: expected a Keras .h5 file, a directory written by "
                  "bloodcell_jax.weights.keras_port, or a workdir with checkpoints")


def merge(fresh: Dict[str, dict], loaded: Dict[str, dict], head_layers, keep_head: bool,
          source: str) -> Tuple[Dict[str, dict], dict]:
  """`fresh` with every non-head leaf taken from `loaded`; returns (variables, summary)."""
  is_head = lambda path: path.split("/")[0] in head_layers
  merged, missing, mismatched, reinit, taken = {}, [], [], set(), 0
  for collection, tree in fresh.items():
    have = traverse_util.flatten_dict(loaded.get(collection) or {}, sep="/")
    out = {}
    for path, value in traverse_util.flatten_dict(tree, sep="/").items():
      if is_head(path) and not keep_head:
        out[path] = value
        reinit.add(path.split("/")[0])
      elif path not in have:
        missing.append(f"{collection}/{path}")
      elif np.shape(have[path]) != np.shape(value):
        mismatched.append(f"{collection}/{path} {np.shape(have[path])} vs {np.shape(value)}")
      else:
        out[path] = np.asarray(have[path], np.asarray(value).dtype)
        taken += 1
    merged[collection] = traverse_util.unflatten_dict(out, sep="/")
  if missing or mismatched:
    raise UserError(f"config.init.weights={source}: does not fit the model: " + "; ".join(
        f"{what} ({len(items)}): {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
        for what, items in (("missing", missing), ("shape differs", mismatched)) if items))
  return merged, {"from": source, "variables_loaded": taken, "head_reinitialised": sorted(reinit)}
