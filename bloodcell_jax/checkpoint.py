"""Orbax checkpoints in the workdir: the latest N for resuming, and the best by validation.

Each checkpoint holds the train state (arrays) and a JSON record of the loop's
own state (epoch, early stopping, elapsed time). The data position is the
step: the input pipeline rebuilds any step's batches from it.
"""

import os
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

# What `best/` ranks by: the early-stopping metric, negated for losses, so higher is better.
BEST_METRIC = "early_stopping_score"


def _manager(directory: str, max_to_keep: int, best_metric: Optional[str] = None):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True,
      best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode="max",
      # Both managers save the same step; their cross-process barriers need distinct names.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=os.path.basename(directory)))
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("state", "meta"))


class Checkpoints:
  """`latest/` keeps the newest `keep` steps; `best/` the single best by BEST_METRIC."""

  def __init__(self, workdir: str, keep: int = 2):
    self.latest = _manager(os.path.join(workdir, "checkpoints", "latest"), keep)
    self.best = _manager(os.path.join(workdir, "checkpoints", "best"), 1, BEST_METRIC)

  def save(self, state, meta: dict, *, best_score: Optional[float] = None):
    """Saves to `latest/`, and to `best/` when `best_score` (higher is better) is given."""
    step = int(meta["step"])
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    self.latest.save(step, args=args, force=True)
    if best_score is not None:
      self.best.save(step, args=args, metrics={BEST_METRIC: best_score}, force=True)

  def restore_latest(self, target_state):
    return _restore(self.latest, self.latest.latest_step(), target_state)

  def restore_best(self, target_state):
    return _restore(self.best, self.best.best_step(), target_state)

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def _restore(manager, step, target_state):
  """(state, meta) at `step` laid out like `target_state`, or None if there is none."""
  if step is None:
    return None
  manager.wait_until_finished()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
  return restored["state"], dict(restored["meta"])


def _one_local_device():
  """Where arrays go when the devices that saved them are not here."""
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def restore_raw_state(directory: str):
  """The best (else newest) saved train state in `directory` as nested dicts of numpy arrays,
  whatever optimizer and whatever devices wrote it (for init_from and predict), or None if
  there is none."""
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "meta"))
  try:
    step = manager.best_step() if manager.best_step() is not None else manager.latest_step()
    if step is None:
      return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(fallback_sharding=_one_local_device())))
    return jax.tree.map(np.asarray, dict(restored["state"]))
  finally:
    manager.close()
