"""EfficientNetV2-S with ImageNet weights, trained on one lab to work on other labs' slides.

configs/effnet_robust.py (the study's augmentation, the shift families, HED stain jitter, grey
world balance inside the model) plus the framing of configs/cnn_xsite.py: each image re-cut
about its nucleus inside the model, so that a lab's wider or tighter crops reach the network
at the training lab's scale. An accelerator recipe: on a CPU it runs the CPU-sized default
budget of configs/effnet_common.py.
"""

from configs import effnet_robust


def get_config():
  config = effnet_robust.get_config()
  config.model.framing = "nucleus"
  return config
