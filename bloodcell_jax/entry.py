"""The one way a config becomes a trained run: launch.py and the sweep runner call `train`.

Defines the multi-host flags both entry points take.
"""

from typing import Optional

from absl import flags, logging

from bloodcell_jax import config_schema, runtime, workdir as workdir_lib

_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with "
                                 "automatic detection (Cloud TPU, SLURM).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def train(config, workdir: str, provenance: Optional[dict] = None) -> dict:
  """Validates `config`, joins the other processes when the flags ask, and trains (or
  resumes, or re-evaluates) it in `workdir` under the workdir's lock; returns the results
  (with `provenance`, e.g. the sweep's record, in results.json)."""
  config_schema.validate(config)
  import jax  # pylint: disable=g-import-not-at-top  (after the config checks: seconds)
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
  with workdir_lib.exclusive(workdir, holder=jax.process_index() == 0):
    runtime.keep_tensorflow_on_host()
    from bloodcell_jax import train as train_lib  # pylint: disable=g-import-not-at-top  (TF)
    return train_lib.run_stages(config, workdir, provenance)
