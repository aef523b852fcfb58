"""Files written whole or not at all (run files are read back by training/run_files.py).

A write that fails (a full disk, a read-only folder) leaves the previous file and no partial
one, and is a UserError naming the file; the OS error stays behind it (`errors.is_disk_full`).
"""

import json
import os

import numpy as np

from bloodcell_jax.errors import UserError


def write_text(path: str, text: str) -> None:
  """Writes whole or not at all: a run killed mid-write leaves the previous file."""
  _write(path, "w", lambda f: f.write(text))


def write_bytes(path: str, data: bytes) -> None:
  _write(path, "wb", lambda f: f.write(data))


def save_figure(figure, path: str, dpi: int) -> None:
  """A matplotlib figure as a PNG file, whole or not at all."""
  _write(path, "wb", lambda f: figure.savefig(f, dpi=dpi, format="png"))


def _write(path: str, mode: str, fill) -> None:
  partial = f"{path}.{os.getpid()}.partial"
  try:
    with open(partial, mode) as f:
      fill(f)
    os.replace(partial, path)
  except OSError as e:
    if os.path.exists(partial):
      os.remove(partial)
    raise UserError(f"{path}: could not write it ({e.strerror or e})") from e


def write_json(path: str, payload: dict) -> None:
  write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value)}")
