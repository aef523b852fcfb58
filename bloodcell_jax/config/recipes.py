"""Recipe files (configs/*.py) loaded as config_flags loads them, and `--config.key` overrides
checked against them."""

import difflib
import os
import runpy
import traceback

from bloodcell_jax.config import flat
from bloodcell_jax.errors import UserError


def load_config_file(spec: str):
  """Runs a recipe file's `get_config()`, as config_flags will: `file.py` or `file.py:arg`
  (then `get_config("arg")`)."""
  path, sep, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"--config={path}: no such config file (see configs/)")
  return call_file_function(path, "get_config", f"--config={spec}", *([arg] if sep else []))


def call_file_function(path: str, name: str, where: str, *args):
  """`name(*args)` of the Python file `path` (a recipe or a sweep); the file failing to run,
  lacking `name`, or `name` raising is one UserError starting with `where` and naming the
  line (an OSError or ValueError that `name` raises on purpose, e.g. a recipe's missing
  source run, is its message alone)."""
  try:
    namespace = runpy.run_path(path)
  except SyntaxError as e:
    raise UserError(f"{where}: line {e.lineno}: {e.msg}") from None
  except Exception as e:  # pylint: disable=broad-except  (the user's code, at import)
    raise UserError(f"{where}: {_failure_in(path, e)}") from None
  if not callable(namespace.get(name)):
    raise UserError(f"{where}: defines no {name}() (see configs/ for examples)")
  try:
    return namespace[name](*args)
  except (UserError, OSError, ValueError) as e:
    raise UserError(f"{where}: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{where}: {name}() failed: {_failure_in(path, e)}") from None


def _failure_in(path: str, error: BaseException) -> str:
  """`line N: Type: message`, N the deepest line of `path` in the error's traceback."""
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  message = str(error).splitlines()[0] if str(error) else ""
  return f"{'line ' + str(lines[-1]) + ': ' if lines else ''}{type(error).__name__}: {message}"


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
