"""Orbax checkpoints in the workdir: the latest N for resuming, and the best by validation.

Each checkpoint holds the train state (arrays) and a JSON record of the loop's
own state (epoch, early stopping, elapsed time). The data position is the
step: the input pipeline rebuilds any step's batches from it.

A checkpoint that cannot be read (a truncated file, an empty metadata file) is set
aside in `checkpoints/corrupt/` with one warning, never deleted, and the run goes
on from the newest readable one.
"""

import logging
import os
import shutil
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from bloodcell_jax.errors import UserError

# What `best/` ranks by: the early-stopping metric, negated for losses, so higher is better.
BEST_METRIC = "early_stopping_score"


class DiskFull(UserError):
  """Too little space for the next checkpoint; the newest complete one is kept."""


# Room kept free beyond a checkpoint's measured size: its metadata, the logs, the summaries.
_SPACE_MARGIN_BYTES = 256 * 1024


def _manager(directory: str, max_to_keep: int, best_metric: Optional[str] = None):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True,
      cleanup_tmp_directories=True,  # a save cut short (a kill, a full disk) leaves no trace
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
    """Saves to `latest/`, and to `best/` when `best_score` (higher is better) is given.
    A step already saved (a run resumed before its newest checkpoint, which was lost) is
    kept: the same step of the same run holds the same state."""
    step = int(meta["step"])
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    targets = [m for m, wanted in ((self.latest, True), (self.best, best_score is not None))
               if wanted and step not in m.all_steps()]
    self._check_space(state, len(targets))
    for manager in targets:
      manager.save(step, args=args, force=True,
                   metrics={BEST_METRIC: best_score} if manager is self.best else None)

  def _check_space(self, state, copies: int) -> None:
    """Stops with one line, before writing, when the disk cannot take `copies` more
    checkpoints (each the size of the newest on disk, or twice the state's bytes)."""
    if not copies:
      return
    self.wait()  # the previous save's size is known, and its space taken
    newest = self.latest.latest_step()
    size = (_bytes_on_disk(_step_dir(self.latest, newest)) if newest is not None else
            2 * sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state)))
    need = copies * size + _SPACE_MARGIN_BYTES
    free = shutil.disk_usage(str(self.latest.directory)).free
    short = free < need
    if jax.process_count() > 1:  # every process stops, or none
      short = bool(np.any(multihost_utils.process_allgather(np.asarray(short))))
    if short:
      kept = (f"the newest complete checkpoint (step {newest}) is kept"
              if newest is not None else "no checkpoint was saved yet")
      raise DiskFull(f"{os.path.dirname(str(self.latest.directory))}: no space for the next "
                     f"checkpoint ({free / 2**20:.1f} MiB free, about {need / 2**20:.1f} MiB "
                     f"needed); {kept}: free some space and rerun the same command to resume")

  def restore_latest(self, target_state):
    """(state, meta) of the newest readable checkpoint in `latest/`, or None."""
    return _restore_newest_readable(self.latest, _newest_first(self.latest), target_state)

  def restore_best(self, target_state):
    """(state, meta) of the best readable checkpoint in `best/`, or None."""
    return _restore_newest_readable(self.best, _best_first(self.best), target_state)

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def _bytes_on_disk(directory: str) -> int:
  return sum(os.stat(os.path.join(d, f)).st_blocks * 512
             for d, _, files in os.walk(directory) for f in files)


def _newest_first(manager) -> list:
  return sorted(manager.all_steps(), reverse=True)


def _best_first(manager) -> list:
  best = manager.best_step()
  return ([best] if best is not None else []) + [s for s in _newest_first(manager) if s != best]


def _restore_newest_readable(manager, steps, target_state):
  """(state, meta) of the first step in `steps` that restores into `target_state`'s layout;
  unreadable ones are set aside. A readable checkpoint that does not fit `target_state` is
  the run's configuration, not damage: a UserError."""
  manager.wait_until_finished()
  for step in steps:
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
      return restored["state"], dict(restored["meta"])
    except Exception as error:  # pylint: disable=broad-except  (Orbax and TensorStore raise many kinds)
      damage = _why_unreadable(manager, step)
      if damage is None:
        raise UserError(f"{_step_dir(manager, step)}: does not fit this run's model or "
                        f"optimizer ({_first_line(error)}); use a new --workdir") from None
      _set_aside(manager, step, damage)
  return None


def _why_unreadable(manager, step) -> Optional[str]:
  """Why the checkpoint at `step` cannot be read whatever the target, or None if it can."""
  try:
    manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(fallback_sharding=_one_local_device()),
        meta=ocp.args.JsonRestore()))
    return None
  except Exception as error:  # pylint: disable=broad-except
    return _first_line(error)


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _step_dir(manager, step) -> str:
  return os.path.join(str(manager.directory), str(step))


def _set_aside(manager, step, reason: str) -> None:
  """Moves an unreadable checkpoint to `checkpoints/corrupt/<kind>/<step>` (process 0; the
  others wait for it) and makes the manager forget it."""
  source = _step_dir(manager, step)
  kind = os.path.basename(str(manager.directory))
  target = os.path.join(os.path.dirname(str(manager.directory)), "corrupt", kind, str(step))
  while os.path.exists(target):  # the same step damaged again: keep both
    target += "_"
  logging.warning("checkpoint %s is unreadable (%s): moved to %s; trying the one before it",
                  source, reason, target)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"set aside {source}")
  manager.reload()


def _one_local_device():
  """Where arrays go when the devices that saved them are not here."""
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def restore_raw_state(directory: str):
  """The best (else newest) readable train state in `directory` as nested dicts of numpy
  arrays, whatever optimizer and whatever devices wrote it (for init_from and predict), or
  None if there is none. Unreadable checkpoints are skipped with a warning, and left where
  they are: this only reads."""
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "meta"))
  try:
    for step in _best_first(manager):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(fallback_sharding=_one_local_device())))
      except Exception as error:  # pylint: disable=broad-except
        logging.warning("checkpoint %s is unreadable (%s); trying the one before it",
                        _step_dir(manager, step), _first_line(error))
        continue
      return jax.tree.map(np.asarray, dict(restored["state"]))
    return None
  finally:
    manager.close()
