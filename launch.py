"""Train and evaluate: `python launch.py --config=configs/cnn.py --workdir=DIR [--config.key=value]`.

Multi-host: pass --coordinator_address, --num_processes and --process_id (or
--distributed for the automatic detection on Cloud TPU and SLURM) and run the
same command on every host.
"""

from absl import app, flags, logging
from ml_collections import config_flags

import jax

from bloodcell_jax import cli, config_schema, runtime, workdir

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results; "
                               "a run resumes from it.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with "
                                 "automatic detection (Cloud TPU, SLURM).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config_schema.validate(_CONFIG.value)
  if _DISTRIBUTED.value or _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  if jax.process_index() != 0:  # one voice in the logs; other processes speak up on warnings
    logging.set_verbosity(logging.WARNING)
  logging.info("JAX %s: process %d of %d, %d local / %d global devices (%s)", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  # One run per workdir; the processes of a multi-process run share process 0's lock.
  with workdir.exclusive(_WORKDIR.value, holder=jax.process_index() == 0):
    runtime.keep_tensorflow_on_host()
    from bloodcell_jax import train  # pylint: disable=g-import-not-at-top  (TensorFlow: slow)
    train.run_stages(_CONFIG.value, _WORKDIR.value)


def _main_reporting_errors(argv):
  cli.run_reporting_errors(main, argv)


if __name__ == "__main__":
  app.run(_main_reporting_errors, flags_parser=cli.parse_flags)
