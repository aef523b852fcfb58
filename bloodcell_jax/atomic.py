"""Files written whole or not at all, and JSON read back."""

import json
import os

import numpy as np


def write_text(path: str, text: str) -> None:
  """Writes whole or not at all: a run killed mid-write leaves the previous file."""
  partial = f"{path}.{os.getpid()}.partial"
  with open(partial, "w") as f:
    f.write(text)
  os.replace(partial, path)


def write_json(path: str, payload: dict) -> None:
  write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def read_json(path: str, default=None):
  """The JSON object in `path`, or `default` when it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return default


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value)}")
