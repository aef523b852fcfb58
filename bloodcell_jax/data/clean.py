"""Keeps `python -m bloodcell_jax.data.clean` working.

The program is bloodcell_jax/cli/clean.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import clean  # pylint: disable=g-import-not-at-top
  clean.run()
