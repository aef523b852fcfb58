"""What every program shares: flag parsing that reports errors in one line, process-wide set-up."""

import logging
import sys

from absl import app, flags

from bloodcell_jax import runtime
from bloodcell_jax.config import recipes
from bloodcell_jax.errors import UserError


class _QuietLibraries(logging.Filter):
  """Drops the INFO chatter of Orbax and clu's logging writer; warnings still pass."""

  def filter(self, record):
    noisy = "/orbax/" in record.pathname or record.pathname.endswith("logging_writer.py")
    return record.levelno >= logging.WARNING or not noisy


def quiet_library_logs() -> None:
  for handler in logging.getLogger().handlers:
    handler.addFilter(_QuietLibraries())


_HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def parse_flags(argv, program: str = "__main__"):
  """absl flag parsing, preceded by the config-key check (for `app.run(flags_parser=...)`);
  a value that does not parse is a user error like any other (exit code 2). --help prints
  the program's usage (the docstring of its module, `program`) and flags, and exits 0."""
  if any(arg in _HELP_FLAGS for arg in argv[1:]):
    module = sys.modules.get(program)
    print((module.__doc__ or "").strip() + "\n")
    print(flags.FLAGS.module_help(module) if "--helpfull" not in argv else flags.FLAGS)
    sys.exit(0)
  try:
    recipes.check_override_keys(argv)
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
  except (UserError, app.UsageError) as e:
    _exit_with(e)


def run_program(main) -> None:
  """Every program's entry point: the process restarted with tcmalloc where it is installed
  (`runtime.restart_with_tcmalloc`), flags parsed by `parse_flags`, `main` run by
  `run_reporting_errors`."""
  runtime.restart_with_tcmalloc()
  app.run(lambda argv: run_reporting_errors(main, argv),
          flags_parser=lambda argv: parse_flags(argv, main.__module__))


def _exit_with(error: UserError):
  logging.shutdown()
  print(f"error: {error}", file=sys.stderr)
  sys.exit(2)
