"""Orbax checkpoints in the workdir: the latest N for resuming, and the best by validation.

Each checkpoint holds the train state (arrays) and a JSON record of the loop's
own state (epoch, early stopping, elapsed time). The data position is the
step: the input pipeline rebuilds any step's batches from it.

A checkpoint that cannot be read (a truncated file, an empty metadata file) is set
aside in `checkpoints/corrupt/` with one warning, never deleted, and the run goes
on from the newest readable one.
"""

import dataclasses
import gc
import io
import json
import logging
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from bloodcell_jax.errors import UserError, innermost_line
from bloodcell_jax.training import run_files

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
    self.latest = _manager(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest"), keep)
    self.best = _manager(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "best"), 1, BEST_METRIC)

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
            2 * sum(leaf.nbytes for leaf in jax.tree.leaves(state)))  # no copy to the host
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
    restored, why = _try_restore(manager, step, ocp.args.Composite(
        state=ocp.args.StandardRestore(target_state), meta=ocp.args.JsonRestore()))
    if why is None:
      return restored["state"], dict(restored["meta"])
    _, damage = _try_restore(manager, step, ocp.args.Composite(  # whatever the target
        state=ocp.args.StandardRestore(fallback_sharding=_one_local_device()),
        meta=ocp.args.JsonRestore()))
    if damage is None:
      raise UserError(f"{_step_dir(manager, step)}: does not fit this run's model or "
                      f"optimizer ({why}); use a new --workdir")
    _set_aside(manager, step, damage)
  return None


class _AsyncioNoise(logging.Filter):
  def filter(self, record):
    return "exception was never retrieved" not in record.getMessage()


# How long the reads still running when a restore fails get to finish, unheard.
_SETTLE_SECONDS = 1.0


def _try_restore(manager, step, args):
  """(restored, None), or (None, why it failed).

  A failed restore leaves Orbax's other reads of that checkpoint running; as they end
  they fail too, in callbacks and coroutines nobody awaits, each printing a traceback
  that repeats the one warning a damaged checkpoint gets. They end in here, unheard.
  """
  previous_hook, previous_stderr, noise = sys.unraisablehook, sys.stderr, _AsyncioNoise()
  sys.unraisablehook = lambda unraisable: None
  logging.getLogger("asyncio").addFilter(noise)
  try:
    try:
      return manager.restore(step, args=args), None
    except Exception as error:  # pylint: disable=broad-except  (Orbax and TensorStore raise many kinds)
      sys.stderr = io.StringIO()
      why = innermost_line(error)
    time.sleep(_SETTLE_SECONDS)  # `error` and the frames it held are gone: let the rest end
    gc.collect()
    return None, why
  finally:
    sys.stderr = previous_stderr
    sys.unraisablehook = previous_hook
    logging.getLogger("asyncio").removeFilter(noise)


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


def restore_raw_state(directory: str, skipped: Optional[List[str]] = None):
  """(state, step) of the best (else newest) readable train state in `directory`, the state
  as nested dicts of numpy arrays, whatever optimizer and whatever devices wrote it (for
  init_from and predict); None if there is none. Unreadable checkpoints are skipped with a
  warning, named in `skipped`, and left where they are: this only reads."""
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "meta"))
  try:
    for step in _best_first(manager):
      restored, why = _try_restore(manager, step, ocp.args.Composite(
          state=ocp.args.StandardRestore(fallback_sharding=_one_local_device())))
      if why is None:
        return jax.tree.map(np.asarray, dict(restored["state"])), int(step)
      logging.warning("checkpoint %s is unreadable (%s); trying the one before it",
                      _step_dir(manager, step), why)
      if skipped is not None:
        skipped.append(f"{os.path.basename(directory)}/{step} unreadable")
    return None
  finally:
    manager.close()


@dataclasses.dataclass(frozen=True)
class RunWeights:
  """The weights a program took from a run, and which checkpoint they came from."""
  variables: Dict[str, dict]  # {"params", "batch_stats"}
  kind: str  # best | latest
  step: int
  ema: bool
  skipped: Tuple[str, ...]  # unreadable checkpoints passed over, e.g. ("best/9 unreadable",)

  def describe(self) -> str:
    what = f"{'weight average of the ' if self.ema else ''}{self.kind} checkpoint, step {self.step}"
    return what + (f" ({'; '.join(self.skipped)})" if self.skipped else "")


def run_variables(workdir: str, where: str, ema: bool = False) -> Optional[RunWeights]:
  """The weights of a training run's best checkpoint (else its newest readable one), their
  moving average with `ema`; None when `workdir` holds no readable checkpoint."""
  skipped = []
  for kind in ("best", "latest"):
    directory = os.path.abspath(os.path.join(workdir, run_files.CHECKPOINTS_DIR, kind))
    restored = restore_raw_state(directory, skipped) if os.path.isdir(directory) else None
    if restored is None:
      continue
    state, step = restored
    if ema:
      if not state.get("ema"):
        raise UserError(f"{where}={workdir}: its run kept no weight average "
                        "(config.train.ema_decay was 0)")
      state = state["ema"]
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    return RunWeights(variables, kind, step, ema, tuple(skipped))
  return None


# Beside a ported checkpoint: which model, from which file, with or without the top.
PORT_RECORD = "port.json"


def save_ported(variables, out_dir: str, record: dict):
  """An Orbax checkpoint of {"params", "batch_stats"} plus `port.json` describing it."""
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(out_dir, "variables"), variables, force=True)
  with open(os.path.join(out_dir, PORT_RECORD), "w") as f:
    json.dump(record, f, indent=2)


def load_ported(out_dir: str) -> Tuple[Dict[str, dict], dict]:
  """(variables, record) written by `save_ported`."""
  with open(os.path.join(out_dir, PORT_RECORD)) as f:
    record = json.load(f)
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.abspath(os.path.join(out_dir, "variables")))
  return jax.tree.map(np.asarray, variables), record
