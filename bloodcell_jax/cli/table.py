"""`bloodcell-table DIR [--out=STEM]`: the results table of a directory of runs.

What the table holds: bloodcell_jax/results/table.py.
"""

from absl import flags

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_OUT = flags.DEFINE_string("out", None, "Path stem of the .md and .csv files (default: DIR/table).")


def main(argv):
  if len(argv) != 2:
    raise UserError("expected one directory of runs: bloodcell-table DIR")
  from bloodcell_jax.results import table  # pylint: disable=g-import-not-at-top
  directory = argv[1]
  results_table = table.write(directory, _OUT.value or "")
  if not results_table.rows and not results_table.damaged:
    raise UserError(f"{directory}: no finished run (no */results.json)")
  print(table.markdown(results_table), end="")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
