"""Keeps `python -m bloodcell_jax.report` working.

The program is bloodcell_jax/cli/report.py.
"""

if __name__ == "__main__":
  from bloodcell_jax.cli import report  # pylint: disable=g-import-not-at-top
  report.run()
