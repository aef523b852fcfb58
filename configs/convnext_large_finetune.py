"""The study's fine-tuned ConvNeXtLarge row: every layer trainable, Adam 1e-4, class weights, the
study's final augmentation (RandAugment + AugMix + random brightness and contrast, as in
configs/effnet.py).

Start from ImageNet (bloodcell-port-keras --model=convnext-large
--keras_weights=convnext_large_notop.h5 --out=weights/convnext_large_imagenet, then
--config.init.weights=weights/convnext_large_imagenet) or from a transfer run of the same model
(--config.init.weights=<workdir> --config.init.head=keep). 198M parameters: on a CPU the
embedded data's two epochs take a while; on an accelerator use bfloat16
(--config.model.dtype=bfloat16) and real data.
"""

from configs import effnet, transfer_common


def get_config():
  config = transfer_common.get_config("convnext-large")
  config.augment.train = "flip|" + effnet.STUDY_FINAL_AUGMENTATION
  return config
