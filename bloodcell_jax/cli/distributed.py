"""The multi-host flags of the programs that train (`bloodcell-train`, `bloodcell-sweep`)."""

from absl import flags

_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with "
                                 "automatic detection (Cloud TPU, SLURM).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def options():
  """jax.distributed.initialize's arguments as the flags give them, or None: one process."""
  if not (_DISTRIBUTED.value or _COORDINATOR.value):
    return None
  return {"coordinator_address": _COORDINATOR.value, "num_processes": _NUM_PROCESSES.value,
          "process_id": _PROCESS_ID.value}
