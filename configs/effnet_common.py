"""What the EfficientNetV2-S recipes share: configs/transfer_common.py with EfficientNetV2-S.

Pretrained start: bloodcell-port-keras --model=efficientnetv2-s \\
    --keras_weights=efficientnetv2-s_notop.h5 --out=weights/effnetv2s_imagenet
then --config.init.weights=weights/effnetv2s_imagenet.
"""

from configs import transfer_common

# The study's Keras base: EfficientNetV2S(include_top=False), 513 layers.
NUM_KERAS_LAYERS = 513


def get_config():
  return transfer_common.get_config("efficientnetv2-s")
