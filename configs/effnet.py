"""The study's final recipe: EfficientNetV2-S, ImageNet start (when init_from is given), every
layer trainable, RandAugment (magnitude 0.5) + AugMix (severity 0.3) + random brightness
and contrast, Adam, class weights, early stopping.
"""

from configs import cnn_strong, effnet_common


def get_config():
  config = effnet_common.get_config()
  config.augment.train = "flip|" + cnn_strong.STUDY_FINAL_AUGMENTATION
  return config
