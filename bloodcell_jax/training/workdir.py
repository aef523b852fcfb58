"""What a workdir guarantees: one run at a time, and one model on one data set for life.

A lock file (`DIR/.lock`: pid, host, start time) keeps a second run out while one
trains; a lock left by a process that died on this host is taken over with a warning.
A workdir's recorded config and data define its checkpoints, so a rerun with another
model, image size, class list or data set is refused before anything is written.
Imports no JAX or TensorFlow: these checks come first.
"""

import contextlib
import json
import logging
import os
import socket
import time
from typing import Optional

from bloodcell_jax.config import flat, recorded
from bloodcell_jax.errors import UserError
from bloodcell_jax.training import run_files

# A lock file still empty this long after it was made belongs to a process that died
# between creating and writing it.
_EMPTY_LOCK_GRACE_SECONDS = 10.0

# Config keys that may differ on resume although they are under `model`: how the model
# runs, not what it is.
_MODEL_KEYS_FREE_ON_RESUME = ("model.dropout", "model.dtype")


@contextlib.contextmanager
def exclusive(workdir: str, holder: bool = True):
  """Holds `workdir`'s lock while the block runs (`holder=False`, for processes other
  than 0 of a multi-process run: they share process 0's)."""
  if not holder:
    yield
    return
  path = os.path.join(workdir, run_files.LOCK)
  record = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  created = not os.path.isdir(workdir)
  _make_dirs(workdir)
  _acquire(path, record)
  try:
    yield
  finally:
    if _read_lock(path) == record:
      os.remove(path)
    if created and not os.listdir(workdir):  # refused before writing anything: leave no trace
      os.rmdir(workdir)


def _make_dirs(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f"--workdir={workdir}: cannot create it ({e.strerror})") from None


def _acquire(path: str, record: dict) -> None:
  for _ in range(3):  # a stale lock is removed, then the create is retried
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      _remove_if_stale(path)
      continue
    except OSError as e:
      raise UserError(f"--workdir={os.path.dirname(path)}: not writable ({e.strerror})") from None
    with os.fdopen(fd, "w") as f:
      json.dump(record, f)
    return
  raise UserError(f"{path}: could not take the workdir's lock; another run keeps taking it")


def _remove_if_stale(path: str) -> None:
  """Removes the lock at `path` if its process is gone; a UserError if it is alive."""
  holder = _read_lock(path)
  workdir = os.path.dirname(path)
  if holder is None:
    if _age_seconds(path) < _EMPTY_LOCK_GRACE_SECONDS:
      raise UserError(f"--workdir={workdir}: another run is starting in it ({path} was just "
                      "made); use another --workdir")
    logging.warning("%s: an empty or unreadable lock file, left by a run that died; taking it "
                    "over", path)
  elif holder.get("host") != socket.gethostname() or process_alive(holder.get("pid")):
    raise UserError(
        f"--workdir={workdir}: in use by process {holder.get('pid')} on {holder.get('host')} "
        f"(started {holder.get('started')}); wait for it to end or use another --workdir "
        f"(if that process is gone, delete {path})")
  else:
    logging.warning("%s: process %s on this host, which held the workdir, is gone; taking "
                    "the lock over", path, holder.get("pid"))
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


def active_holder(workdir: str) -> Optional[dict]:
  """The lock record of the run using `workdir` now (a live process on this host, or any
  on another host), else None."""
  holder = _read_lock(os.path.join(workdir, run_files.LOCK))
  if holder is None or (holder.get("host") == socket.gethostname()
                        and not process_alive(holder.get("pid"))):
    return None
  return holder


def _read_lock(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      record = json.load(f)
    return record if isinstance(record, dict) else None
  except (OSError, ValueError):
    return None


def _age_seconds(path: str) -> float:
  try:
    return time.time() - os.path.getmtime(path)
  except OSError:
    return 0.0


def process_alive(pid) -> bool:
  """Whether process `pid` runs on this host (a zombie does not)."""
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return not _zombie(pid)


def _zombie(pid: int) -> bool:
  """Whether `pid` has exited but was not reaped (its parent died too, and the container's
  first process does not reap orphans): it holds nothing."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] == "Z"
  except (OSError, IndexError):
    return False


def check_identity(workdir: str, config: dict, manifest: dict, warn: bool = True) -> None:
  """Refuses (UserError) a run whose model, image size, classes or data differ from those
  `workdir` recorded (`config.json`, `split_manifest.json`); a new workdir passes. Other
  settings may change on resume; with `warn`, a warning lists them."""
  config_path = os.path.join(workdir, run_files.CONFIG)
  manifest_path = os.path.join(workdir, run_files.SPLIT_MANIFEST)
  if not os.path.isfile(config_path):
    return
  before = flat.leaves(recorded.upgrade_recorded(run_files.read_json(config_path)))
  now = flat.leaves(config)
  changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
  defining = [k for k in changed if (k == "image_size" or k.startswith("model."))
              and k not in _MODEL_KEYS_FREE_ON_RESUME]
  if os.path.isfile(manifest_path):
    defining += _data_differences(run_files.read_json(manifest_path), manifest)
  if defining:
    raise UserError(f"--workdir={workdir}: holds a run of another model or data set "
                    f"({'; '.join(_describe(k, before, now) for k in defining)}); its "
                    "checkpoints cannot continue with these settings: use a new --workdir")
  if changed and warn:
    logging.warning("%s holds a run started with other settings; it resumes from its checkpoints "
                    "with the new ones (use a fresh --workdir to start over): %s", workdir,
                    ", ".join(_describe(k, before, now) for k in changed))


def _data_differences(recorded: dict, now: dict) -> list:
  differences = []
  if recorded.get("class_names") != now.get("class_names"):
    differences.append("class_names")
  for split in ("train", "val", "test"):
    before, after = recorded.get(split) or {}, now.get(split) or {}
    if (before.get("ids"), before.get("labels")) != (after.get("ids"), after.get("labels")):
      differences.append(f"{split} images")
  return differences


def _describe(key: str, recorded: dict, now: dict) -> str:
  if key in recorded or key in now:
    return f"{key}: {recorded.get(key)!r} -> {now.get(key)!r}"
  return f"{key} differ"
