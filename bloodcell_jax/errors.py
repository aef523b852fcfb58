"""User-facing errors: one line that names the file, key or flag and what was expected; and
the one line that says what went wrong behind a library's error."""

import errno


class UserError(Exception):
  """Bad input from the user (a path, a file, a config value).

  `launch.py` and the module CLIs print it as a single line and exit non-zero,
  without a traceback: the message alone must say what to fix.
  """


def innermost_line(error: BaseException) -> str:
  """`Type: first line` of the innermost error behind `error`: where libraries wrap an OS or
  TensorStore error, that one names the file and what is wrong with it."""
  while _behind(error) is not None:
    error = _behind(error)
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or an error behind it, is a full disk (Orbax and TensorStore report it
  in their own exception types, with the OS message)."""
  while error is not None:
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
      return True
    error = _behind(error)
  return False


def _behind(error: BaseException):
  """The error `error` was raised from or while handling (unless it was raised `from None`)."""
  return error.__cause__ or (None if error.__suppress_context__ else error.__context__)
