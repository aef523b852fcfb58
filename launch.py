"""Train and evaluate one recipe.

  python launch.py --config=configs/cnn.py --workdir=DIR [--config.key=value]

The same program as `bloodcell-train` (bloodcell_jax/cli/train.py), runnable from a checkout
without installing the package.
"""

from bloodcell_jax.cli import train

if __name__ == "__main__":
  train.run()
