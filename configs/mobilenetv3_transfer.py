"""The study's MobileNetV3Small transfer row: the ImageNet backbone frozen (BatchNorm in inference
mode), only the study's head trains, Adam 1e-3, class weights, the basic augmentation.

Pretrained start: bloodcell-port-keras --model=mobilenetv3-small \\
    --keras_weights=weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5 \\
    --out=weights/mobilenetv3_small_imagenet
then --config.init.weights=weights/mobilenetv3_small_imagenet.
"""

from configs import transfer_common


def get_config():
  return transfer_common.transfer_config("mobilenetv3-small")
