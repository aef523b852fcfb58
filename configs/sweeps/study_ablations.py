"""The study's failed experiments, each a change to the custom CNN of configs/cnn.py.

  bloodcell-sweep --config=configs/sweeps/study_ablations.py --workdir=runs/ablations \\
      --config.data.train=../shared/data/pbc96 [--seeds=3] [--config.num_epochs=3]

The baseline is configs/cnn.py (Adam, BatchNorm, global average pooling, ReLU, L2 1e-3 on
the kernels, the basic augmentation); every other run changes one thing, as the study
tried it: Lion for Adam, GroupNorm or no normalisation for BatchNorm, CutMix + MixUp,
Flatten for global average pooling, LeakyReLU for ReLU, L1 at lambda 0.01, 0.001 and
0.0001 or L2 at 0.01 and 0.0001 (0.001 is the baseline), and the augmentation's
strength (none, the basic one of the baseline, the study's final).
"""

from bloodcell_jax.sweep import hyper
from configs import cnn, cnn_strong


def get_config():
  return cnn.get_config()


def get_sweep():
  basic = cnn.get_config().augment.train
  variants = {
      "baseline": {},
      # Lion's updates are sign-sized: its authors' rule is a 3-10x smaller learning rate.
      "optimizer=lion": {"optim.name": "lion", "optim.learning_rate": 3e-4},
      "norm=group": {"model.norm": "group"},
      "norm=none": {"model.norm": "none"},
      "cutmix+mixup": {"augment.train": basic + "|cutmix(alpha=1, p=0.5)|mixup(alpha=0.2, p=0.5)"},
      "head=flatten": {"model.head": "flatten"},
      "activation=leaky_relu": {"model.activation": "leaky_relu"},
  }
  for penalty, strengths in (("l1", (1e-2, 1e-3, 1e-4)), ("l2", (1e-2, 1e-4))):  # l2 1e-3: baseline
    for strength in strengths:
      variants[f"{penalty}={strength:g}"] = {"loss.l1": 0.0, "loss.l2": 0.0,
                                             f"loss.{penalty}": strength}
  variants["augment=none"] = {"augment.train": ""}
  variants["augment=strong"] = {"augment.train": cnn_strong.get_config().augment.train}
  return hyper.with_seeds(variants, 1)
