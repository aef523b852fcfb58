"""Keeps `python -m bloodcell_jax.predict` working.

The program is bloodcell_jax/cli/predict.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import predict  # pylint: disable=g-import-not-at-top
  predict.run()
