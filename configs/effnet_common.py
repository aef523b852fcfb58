"""What the EfficientNetV2-S recipes share: the model, the study's head, Adam, class weights.

Pretrained start: port the official Keras ImageNet file once,
  python -m bloodcell_jax.weights.keras_port --model=efficientnetv2-s \\
      --keras_weights=efficientnetv2-s_notop.h5 --out=weights/effnetv2s_imagenet
and pass --config.model.init_from=weights/effnetv2s_imagenet (a Keras .h5 works
too). Without it the run logs that it trains from scratch.
"""

import ml_collections

from configs import default

# The study's Keras base: EfficientNetV2S(include_top=False), 513 layers.
NUM_KERAS_LAYERS = 513


def get_config():
  config = default.get_config()
  # A CPU-sized budget: minutes on the embedded data. On an accelerator and
  # real data use e.g. --config.num_epochs=30 (early stopping ends it).
  config.num_epochs = 2
  config.data.synthetic_size = 1000
  config.batch_size = 32
  config.eval_batch_size = 128
  config.model = ml_collections.ConfigDict(dict(
      name="efficientnetv2-s",
      head="flatten",  # the study's Flatten, Dropout, Dense, Dropout, Dense(8)
      pooling="avg",
      dense_units=256,
      dropout=0.5,
      drop_connect_rate=0.2,
      input_norm="none",  # none | grey_world | channel_standardize
      dtype="float32",  # bfloat16 on accelerators
      param_dtype="float32",
      init_from="",
      init_head="reinit",
      frozen_bn_mode="inference",
  ))
  config.loss.l2 = 0.0
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-4
  config.train.early_stopping_patience = 5
  return config
