"""Recipe files (configs/*.py) loaded as config_flags loads them, and `--config.key` overrides
checked against them."""

import difflib
import os
import runpy

from bloodcell_jax.config import flat
from bloodcell_jax.errors import UserError


def load_config_file(spec: str):
  """Runs a recipe file's `get_config()`, as config_flags will: `file.py` or `file.py:arg`
  (then `get_config("arg")`)."""
  path, sep, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"--config={path}: no such config file (see configs/)")
  get_config = runpy.run_path(path)["get_config"]
  try:
    return get_config(arg) if sep else get_config()
  except (OSError, ValueError) as e:
    raise UserError(f"--config={spec}: {e}") from None


def check_override_keys(argv, flag: str = "config") -> None:
  """Loads the config file and rejects `--config.some.key=...` flags whose key it does not
  have.

  config_flags would answer a config that fails to load, or an unknown key, with a
  traceback; this names the flag (and the closest valid keys) in one line instead.
  """
  paths = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{flag}=")]
  if not paths:
    return
  config = load_config_file(paths[-1])
  valid = flat.keys(config)
  overrides = [a for a in argv[1:] if a.startswith(f"--{flag}.")]
  for arg in overrides:
    key = arg[len(flag) + 3:].split("=", 1)[0]
    if key not in valid:
      close = close_keys(key, config)
      hint = f"; closest valid keys: {', '.join(close)}" if close else ""
      raise UserError(f"--{flag}.{key}: unknown config key{hint}")


def close_keys(key: str, config) -> list:
  """The config's keys spelled most like `key` (up to 3)."""
  return difflib.get_close_matches(key, flat.keys(config), n=3, cutoff=0.5)
