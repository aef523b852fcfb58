"""`bloodcell-report --workdir=DIR`: the HTML report of a run or of a sweep's directory.

What the reports show: bloodcell_jax/results/report.py.
"""

import os

from absl import app, flags

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir or a sweep's directory.")


def main(argv):
  from bloodcell_jax import output_paths  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.training import run_files  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bloodcell_jax.results import report  # pylint: disable=g-import-not-at-top
  directory = _WORKDIR.value
  if not directory or not os.path.isdir(directory):
    raise UserError(f"--workdir={directory}: expected a run's workdir or a sweep's directory")
  output_paths.directory_output(directory, "--workdir")
  if os.path.isfile(os.path.join(directory, run_files.CONFIG)):  # a run's, finished or not
    path = report.write_run_report(directory)
  else:
    path = report.write_sweep_report(directory)
  print(f"wrote {path}")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
