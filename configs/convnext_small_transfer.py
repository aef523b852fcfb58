"""The study's ConvNeXtSmall transfer row: the ImageNet backbone frozen (its final LayerNorm too),
only the study's head trains, Adam 1e-3, class weights, the basic augmentation.

Pretrained start: bloodcell-port-keras --model=convnext-small \\
    --keras_weights=convnext_small_notop.h5 --out=weights/convnext_small_imagenet
then --config.init.weights=weights/convnext_small_imagenet.
"""

from configs import transfer_common


def get_config():
  return transfer_common.transfer_config("convnext-small")
