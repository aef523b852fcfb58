"""The study's Table 1: its three final models, plus the MobileNetV3Small and ConvNeXtSmall
transfer rows, three seeds each.

  python -m bloodcell_jax.sweep --config=configs/sweeps/study_table1.py --workdir=runs/table1 \\
      --config.data.train=../shared/data/pbc96 [--config.data.test=DIR] [--parallel=8]

Each row starts from its own recipe: the custom CNN (configs/cnn.py), ConvNeXtLarge
fine-tuned (configs/convnext_large_finetune.py), EfficientNetV2-S transferred then
fine-tuned (configs/effnet_staged.py), and the two transfer rows. The ImageNet rows
start from the ports in weights/ (docs/backbones.md) when they are there,
else from scratch with a warning. On a CPU the backbones take hours: run this sweep
on accelerators (--parallel with one GPU or TPU chip per run, or --index from a job
array).
"""

import os

from bloodcell_jax.sweep import hyper
from configs import default

ROWS = {  # run group: (recipe, ImageNet port)
    "custom_cnn": ("configs/cnn.py", ""),
    "convnext_large_finetune": ("configs/convnext_large_finetune.py",
                                "weights/convnext_large_imagenet"),
    "efficientnetv2s_finetune": ("configs/effnet_staged.py", "weights/effnetv2s_imagenet"),
    "mobilenetv3small_transfer": ("configs/mobilenetv3_transfer.py",
                                  "weights/mobilenetv3_small_imagenet"),
    "convnextsmall_transfer": ("configs/convnext_small_transfer.py",
                               "weights/convnext_small_imagenet"),
}


def get_config():
  return default.get_config()


def get_sweep():
  rows = {}
  for name, (recipe, port) in ROWS.items():
    rows[name] = {"recipe": recipe}
    if port and os.path.isdir(port):
      rows[name]["init.weights"] = port
  return hyper.with_seeds(rows, 3)
