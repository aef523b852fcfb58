"""Keeps `python -m bloodcell_jax.robustness` working.

The program is bloodcell_jax/cli/robustness.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import robustness  # pylint: disable=g-import-not-at-top
  robustness.run()
