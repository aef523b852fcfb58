"""Command-line helpers shared by launch.py and the module CLIs."""

import difflib
import logging
import os
import runpy
import sys

from absl import flags

from bloodcell_jax import runtime
from bloodcell_jax.errors import UserError


def flatten_keys(config, prefix: str = "") -> list:
  keys = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    keys.append(name)
    if hasattr(value, "items"):
      keys += flatten_keys(value, name + ".")
  return keys


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
  valid = flatten_keys(config)
  overrides = [a for a in argv[1:] if a.startswith(f"--{flag}.")]
  for arg in overrides:
    key = arg[len(flag) + 3:].split("=", 1)[0]
    if key not in valid:
      close = close_keys(key, config)
      hint = f"; closest valid keys: {', '.join(close)}" if close else ""
      raise UserError(f"--{flag}.{key}: unknown config key{hint}")


def close_keys(key: str, config) -> list:
  """The config's keys spelled most like `key` (up to 3)."""
  return difflib.get_close_matches(key, flatten_keys(config), n=3, cutoff=0.5)


class _QuietLibraries(logging.Filter):
  """Drops the INFO chatter of Orbax and clu's logging writer; warnings still pass."""

  def filter(self, record):
    noisy = "/orbax/" in record.pathname or record.pathname.endswith("logging_writer.py")
    return record.levelno >= logging.WARNING or not noisy


def quiet_library_logs() -> None:
  for handler in logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())


def parse_flags(argv):
  """absl flag parsing, preceded by the config-key check (for `app.run(flags_parser=...)`);
  a value that does not parse is a user error like any other (exit code 2)."""
  try:
    check_override_keys(argv)
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      raise UserError(str(e).removeprefix("flag ")) from None
  except UserError as e:
    _exit_with(e)


def run_reporting_errors(main, argv) -> None:
  """Runs `main(argv)` after the process-wide set-up (`runtime.set_up`); a UserError
  becomes one 'error:' line and exit code 2."""
  runtime.set_up()
  quiet_library_logs()
  try:
    main(argv)
  except UserError as e:
    _exit_with(e)


def _exit_with(error: UserError):
  logging.shutdown()
  print(f"error: {error}", file=sys.stderr)
  sys.exit(2)
