"""Keeps `python -m bloodcell_jax.table` working.

The program is bloodcell_jax/cli/table.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import table  # pylint: disable=g-import-not-at-top
  table.run()
