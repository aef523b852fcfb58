"""The study's final recipe: EfficientNetV2-S, ImageNet start (when init.weights is given), every
layer trainable, RandAugment (magnitude 0.5) + AugMix (severity 0.3) + random brightness
and contrast, Adam, class weights, early stopping.
"""

from configs import effnet_common

# Magnitudes as Keras's layers draw them: uniform up to the factor, per image and op.
STUDY_FINAL_AUGMENTATION = ("randaugment(num_ops=2, magnitude=0.5, random_magnitude=True)"
                            "|augmix(severity=0.3)|random_brightness(0.2)|random_contrast(0.2)")


def get_config():
  config = effnet_common.get_config()
  config.augment.train = "flip|" + STUDY_FINAL_AUGMENTATION
  return config
