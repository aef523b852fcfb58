"""`bloodcell-port-keras`: Keras ImageNet weights (.h5 / .weights.h5) to a Flax checkpoint.

  bloodcell-port-keras --model=efficientnetv2-s --keras_weights=FILE --out=DIR
  bloodcell-port-keras --model=convnext-small --download --out=DIR   # needs network access

How layers map: bloodcell_jax/weights/keras_port.py.
"""

import json
import os

from absl import flags

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

flags.DEFINE_string("model", "efficientnetv2-s", "Model name, e.g. efficientnetv2-s.")
flags.DEFINE_string("keras_weights", "", "Keras .h5 / .weights.h5 file to port.")
flags.DEFINE_string("out", None, "Directory for the ported Orbax checkpoint.", required=True)
flags.DEFINE_bool("download", False, "Fetch the official ImageNet weights (needs network).")
flags.DEFINE_bool("include_top", False, "With --download: the file with the 1000-class top.")
flags.DEFINE_string("model_args", "{}", 'Constructor arguments as JSON, e.g. \'{"alpha": 0.75}\'.')
_F = flags.FLAGS


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.weights import keras_port  # pylint: disable=g-import-not-at-top
  model_name = _F.model
  if _F.download:
    path = keras_port.download_keras_weights(model_name, _F.include_top)
  elif _F.keras_weights:
    path = _F.keras_weights
  else:
    raise UserError("give --keras_weights=FILE (e.g. efficientnetv2-s_notop.h5), or --download "
                    "with network access")
  try:
    model_args = dict(json.loads(_F.model_args))
  except (ValueError, TypeError) as e:
    raise UserError(f"--model_args={_F.model_args}: expected a JSON object such as "
                    f"'{{\"alpha\": 0.75}}' ({e})") from None
  weights = keras_port.read_keras_weights(model_name, path, model_args)
  variables, include_top = keras_port.port(model_name, weights, path, model_args)
  count = sum(np.size(v) for v in jax.tree.leaves(variables["params"]))
  checkpoint.save_ported(variables, _F.out, {"model": model_name, "include_top": include_top,
                                     "model_args": model_args, "source": os.path.abspath(path),
                                     "num_params": int(count)})
  print(f"ported {path} -> {_F.out}: {model_name}, include_top={include_top}, "
        f"{count:,} parameters")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
