"""The study's final recipe: EfficientNetV2-S, ImageNet start (when init_from is given), every
layer trainable, strong augmentation, Adam, class weights, early stopping.

The study's final augmentation was RandAugment (magnitude 0.5) + AugMix
(severity 0.3) + random brightness and contrast; until those ops are in the
pipeline this uses the basic augmentation with random brightness and contrast.
"""

from configs import effnet_common


def get_config():
  config = effnet_common.get_config()
  config.augment.train = ("flip|affine(rotate=0.5, translate=0.1, zoom=0.2)"
                          "|brightness(0.2)|contrast(0.2)")
  return config
