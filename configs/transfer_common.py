"""What the study's transfer-learning and fine-tuning recipes share: an ImageNet backbone with the
study's head (Flatten, Dropout, Dense, Dropout, Dense(8)), Adam, class weights, no L2.

Pretrained start: port the official Keras ImageNet file once (the file names are in
docs/backbones.md), e.g.
  bloodcell-port-keras --model=efficientnetv2-s \\
      --keras_weights=efficientnetv2-s_notop.h5 --out=weights/effnetv2s_imagenet
and pass --config.init.weights=weights/effnetv2s_imagenet (a Keras .h5 works too).
Without it the run logs that it trains from scratch. As a recipe of its own:
--config=configs/transfer_common.py:convnext-base (any registered model, every layer trains).
"""

from configs import default


def get_config(model: str = "efficientnetv2-s"):
  config = default.get_config(model=model)
  # A CPU-sized budget: minutes on the embedded data. On an accelerator and
  # real data use e.g. --config.num_epochs=30 (early stopping ends it).
  config.num_epochs = 2
  config.data.synthetic_size = 1000
  config.batch_size = 32
  config.eval_batch_size = 128
  config.model.head = "flatten"  # the study's Flatten, Dropout, Dense, Dropout, Dense(8)
  config.loss.l2 = 0.0
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-4
  config.train.early_stopping_patience = 5
  return config


def transfer_config(model: str):
  """The study's transfer-learning step: the backbone frozen (its BatchNorm in inference
  mode), only the study's head trains, at Adam 1e-3."""
  config = get_config(model)
  config.optim.freeze = [("(head_dense|predictions)/.*", "train"), (".*", "freeze")]
  config.optim.learning_rate = 1e-3
  return config
