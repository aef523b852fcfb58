"""Study stage 2: the first 480 of the backbone's 513 Keras layers frozen, the rest and the head
train. Start it from stage 1: --config.init.weights=<effnet_transfer workdir> (head kept)."""

from configs import effnet_common


def get_config():
  config = effnet_common.get_config()
  config.optim.freeze_keras_layers = 480
  config.init.head = "keep"
  return config
