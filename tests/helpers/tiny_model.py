"""A model defined and registered outside the library (the model interface's tests): two conv +
BatchNorm layers and a classifier, named as a Keras port would name them. Importing this module
registers it as NAME."""

import flax.linen as nn
import jax.numpy as jnp
from flax import traverse_util

from bloodcell_jax import models
from bloodcell_jax.models.layers import batch_norm
from bloodcell_jax.weights import init_from
from configs import default

NAME = "test-tiny-net"


class TinyNet(nn.Module):
  """Two conv + BatchNorm layers and a classifier, named as a Keras port would name them."""
  num_classes: int = 8
  width: int = 4
  frozen_bn: tuple = ()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x / 255.0
    for name in ("stem", "block1"):
      x = nn.Conv(self.width, (3, 3), (2, 2), use_bias=False, name=f"{name}_conv")(x)
      x = nn.relu(batch_norm(self, x, f"{name}_bn", train, frozen=self.frozen_bn))
    return nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2)))


# `model.layers` of the Keras model this one would be a port of.
KERAS_LAYERS = (("input_layer", False), ("stem_conv", True), ("stem_bn", True),
                ("stem_relu", False), ("block1_conv", True), ("block1_bn", True),
                ("block1_relu", False), ("avg_pool", False))

models.register(NAME, head=("classifier",), frozen_batch_norm=True,
                defaults=dict(width=4, dtype="float32", param_dtype="float32"),
                keras=models.KerasPort(layers=lambda include_top, model_args: KERAS_LAYERS,
                                       module_path=lambda layer: layer, application="TinyNet"),
                )(lambda num_classes=8, **kwargs: TinyNet(num_classes=num_classes, **kwargs))


def tiny_config():
  config = default.get_config(model=NAME)
  config.update(image_size=16, batch_size=16, eval_batch_size=32, num_epochs=1)
  config.data.synthetic_size = 96
  config.data.val_fraction = 0.25
  config.train.log_every_steps = 2
  config.augment.train = "flip"
  config.eval.report = False
  # s1 trains all; s2 freezes Keras layers[:4] (stem_conv, stem_bn); s3 freezes block1 by regex.
  config.stages.s1_all = dict(optim=dict(freeze_keras_layers=0))
  config.stages.s2_first_4 = dict(optim=dict(freeze_keras_layers=4))
  config.stages.s3_regex = dict(optim=dict(freeze=[("block1_.*", "freeze"), (".*", "train")]))
  return config


def flat_variables(workdir):
  variables = init_from.load_variables(str(workdir), NAME)
  return {c: traverse_util.flatten_dict(variables[c], sep="/") for c in variables}
