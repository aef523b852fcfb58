"""User-facing errors: one line that names the file, key or flag and what was expected."""


class UserError(Exception):
  """Bad input from the user (a path, a file, a config value).

  `launch.py` and the module CLIs print it as a single line and exit non-zero,
  without a traceback: the message alone must say what to fix.
  """
