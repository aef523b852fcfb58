"""EfficientNetV2-S with ImageNet weights, trained on one lab to work on other labs' slides.

configs/effnet_robust.py (the study's augmentation, the shift families, HED stain jitter) with
the input of configs/cnn_xsite.py: each image re-cut about its nucleus inside the model, half
the training images shrunk first by up to 2x, and stain density instead of colour, so that a
lab's framing, stain and camera reach the network as the training lab's would. An accelerator
recipe: on a CPU it runs the CPU-sized default budget of configs/effnet_common.py.
"""

from configs import effnet_robust


def get_config():
  config = effnet_robust.get_config()
  config.model.framing = "nucleus"
  config.model.input_norm = "stain_density"
  config.augment.train += "|scale_jitter(min_scale=0.5, max_scale=1.0, p=0.5)"
  return config
