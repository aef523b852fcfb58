"""EfficientNetV2-S (configs/effnet.py) trained to hold up on other microscopes, cameras and stains.

The study's final augmentation, then the robustness benchmark's shift families (one per
image on most images, at a random strength up to the severest level) and Tellez et al.'s
HED stain jitter, as in configs/cnn_robust.py. Each image is grey-world balanced inside
the model (a camera's white balance and a stain's overall cast removed): a milder
normalisation than cnn_robust's, which keeps the contrast and brightness the ImageNet
weights were trained on. An accelerator recipe: on a CPU it runs the CPU-sized default
budget of configs/effnet_common.py.
"""

from configs import effnet


def get_config():
  config = effnet.get_config()
  config.model.input_norm = "grey_world"
  config.augment.train += "|hed_jitter(sigma=0.05, bias=0.02)|shifts(severity=1.0, p=0.5)"
  return config
