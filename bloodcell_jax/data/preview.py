"""Keeps `python -m bloodcell_jax.data.preview` working.

The program is bloodcell_jax/cli/preview.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import preview  # pylint: disable=g-import-not-at-top
  preview.run()
