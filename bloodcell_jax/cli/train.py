"""`bloodcell-train` (also `python launch.py`): train and evaluate one recipe.

  bloodcell-train --config=configs/cnn.py --workdir=DIR [--config.key=value ...]

Multi-host: pass --coordinator_address, --num_processes and --process_id (or --distributed
for the automatic detection on Cloud TPU and SLURM) and run the same command on every host.
"""

from absl import app, flags
from ml_collections import config_flags

from bloodcell_jax.cli import common, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results; "
                               "a run resumes from it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bloodcell_jax.trainer import entry  # pylint: disable=g-import-not-at-top
  entry.train(_CONFIG.value, _WORKDIR.value, processes=distributed.options())


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
