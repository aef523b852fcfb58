"""`bloodcell-sweep`: every run of a sweep file, each in DIR/<run name>/.

  bloodcell-sweep --config=configs/sweeps/study_ablations.py --workdir=DIR
  ... --config.num_epochs=3   an override for every run (it wins over the runs' own)
  ... --list                  the runs with their overrides and status, nothing run
  ... --parallel=N            N runs at once, each pinned to its share of the CPU cores
                              (and of the GPUs, or one TPU chip each)
  ... --index=K               only run K, as --list numbers them: one task of a SLURM job
                              array (--index=$SLURM_ARRAY_TASK_ID) or of any other scheduler
  ... --seeds=N               every run group with seeds 0..N-1 instead of the file's

Rerunning the command skips finished runs, resumes interrupted ones and retries failed ones
(bloodcell_jax/sweep/runner.py). At the end it writes DIR/table.md, DIR/table.csv and
DIR/report.html.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bloodcell_jax.cli import common, distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep file in configs/sweeps/ (its get_config() is the base of every run).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory: one sub-directory per run.")
_LIST = flags.DEFINE_bool("list", False, "Print the runs, their overrides and status; run nothing.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once on this machine.", lower_bound=1)
_INDEX = flags.DEFINE_integer("index", None, "Run only the run with this index (see --list).")
_SEEDS = flags.DEFINE_integer("seeds", None, "Run every run group with seeds 0..N-1.",
                              lower_bound=1)
_CPUS = flags.DEFINE_string("cpus", "", "Pin this process to these CPU cores (e.g. 0-3 or "
                            "0,2); --parallel gives each run its share.")
_SUMMARIES = flags.DEFINE_bool("summaries", True, "Write the table and the sweep's report.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bloodcell_jax.sweep import runner  # pylint: disable=g-import-not-at-top
  if _CPUS.value:
    os.sched_setaffinity(0, runner.parse_cpus(_CPUS.value))
  command_line = dict(config_flags.get_override_values(flags.FLAGS["config"]))
  sweep = runner.load_sweep(config_flags.get_config_filename(flags.FLAGS["config"]),
                            command_line, _SEEDS.value)
  workdir = _WORKDIR.value
  if _LIST.value:
    runner.print_runs(sweep, workdir)
    return
  failed = []
  if _INDEX.value is not None:
    runner.run_index(sweep, _INDEX.value, workdir, distributed.options())
  else:
    failed = runner.run_all(sweep, workdir, _PARALLEL.value,
                            runner.command_line_overrides(sys.argv[1:]))
  if _SUMMARIES.value:
    runner.write_summaries(workdir)
  if failed:
    logging.error("%d of %d runs failed: %s (rerun the same command to retry them)",
                  len(failed), len(sweep.runs), ", ".join(failed))
    sys.exit(1)


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
