"""The one way a config becomes a trained run: `bloodcell-train` (launch.py) and the sweep
runner call `train`."""

from typing import Optional

from absl import logging

from bloodcell_jax import runtime
from bloodcell_jax.config import schema
from bloodcell_jax.models import native
from bloodcell_jax.training import workdir as workdir_lib


def train(config, workdir: str, provenance: Optional[dict] = None,
          processes: Optional[dict] = None) -> dict:
  """Validates `config`, joins the other processes (`processes`: the arguments of
  jax.distributed.initialize, or None for one process), and trains (or resumes, or
  re-evaluates) it in `workdir` under the workdir's lock; returns the results (with
  `provenance`, e.g. the sweep's record, in results.json)."""
  if processes is not None:  # before anything starts a JAX backend (the schema's model check)
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(**processes)
  schema.validate(config)
  import jax  # pylint: disable=g-import-not-at-top,redefined-outer-name  (after the checks)
  if jax.process_index() != 0:  # one voice in the logs; other processes speak up on warnings
    logging.set_verbosity(logging.WARNING)
  logging.info("JAX %s: process %d of %d, %d local / %d global devices (%s), %s memory "
               "allocator, %s", jax.__version__, jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform, runtime.allocator(),
               "convolutions by oneDNN and Winograd's in C++" if native.in_use()
               else "XLA's convolutions")
  # One run per workdir; the processes of a multi-process run share process 0's lock.
  with workdir_lib.exclusive(workdir, holder=jax.process_index() == 0):
    runtime.keep_tensorflow_on_host()
    from bloodcell_jax.trainer import run  # pylint: disable=g-import-not-at-top  (TensorFlow)
    return run.run_stages(config, workdir, provenance)
