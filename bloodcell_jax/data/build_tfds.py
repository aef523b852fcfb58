"""Keeps `python -m bloodcell_jax.data.build_tfds` working.

The program is bloodcell_jax/cli/build_tfds.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import build_tfds  # pylint: disable=g-import-not-at-top
  build_tfds.run()
