"""The custom CNN of configs/cnn.py over seeds, evaluated with and without test-time
augmentation: the spread between seeds, what TTA adds, and what their ensemble adds.

  python -m bloodcell_jax.sweep --config=configs/sweeps/cnn_seeds.py --workdir=runs/cnn_seeds \\
      --config.data.train=../shared/data/pbc96
"""

from bloodcell_jax.sweep import hyper
from configs import cnn


def get_config():
  config = cnn.get_config()
  config.eval.tta = "d4"
  return config


def get_sweep():
  return hyper.with_seeds({"cnn": {}}, 3)
