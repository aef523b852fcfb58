"""A run directory's checkpoints, read the way a test compares runs."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from bloodcell_jax.training import run_files


def final_state(workdir):
  """(step, state as numpy arrays) of the newest checkpoint, whatever devices saved it and
  in the dtypes it was saved in (float64 too)."""
  manager = ocp.CheckpointManager(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest"),
                                  item_names=("state", "meta"))
  step = manager.latest_step()
  with jax.enable_x64(True):
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        fallback_sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))))
    state = jax.tree.map(np.asarray, restored["state"])
  manager.close()
  return step, state


def finished_steps(workdir):
  """The steps of the complete checkpoints in checkpoints/latest, in order."""
  directory = os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())
