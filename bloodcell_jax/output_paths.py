"""Where a program may write, checked before any work: an existing, writable directory, never
one of the program's inputs, never two outputs on one path."""

import os
from typing import Iterable, Optional, Sequence, Tuple

from bloodcell_jax.errors import UserError

Named = Tuple[str, Optional[str]]  # (how the user named it, e.g. "--input", path)


def file_output(path: str, flag: str, inputs: Iterable[Named] = ()) -> str:
  """`path` (the value of `flag`) as a file the program will write; its absolute path."""
  absolute = os.path.abspath(path)
  directory = os.path.dirname(absolute)
  if not os.path.isdir(directory):
    raise UserError(f"{flag}={path}: no such directory {directory}")
  if os.path.isdir(absolute):
    raise UserError(f"{flag}={path}: is a directory; expected a file path")
  _check_writable(directory, f"{flag}={path}")
  not_an_input(absolute, f"{flag}={path}", inputs)
  return absolute


def directory_output(path: str, flag: str) -> str:
  """`path` as an existing directory the program will write files into; its absolute path."""
  absolute = os.path.abspath(path)
  if not os.path.isdir(absolute):
    raise UserError(f"{flag}={path}: no such directory")
  _check_writable(absolute, f"{flag}={path}")
  return absolute


def not_an_input(path: str, described: str, inputs: Iterable[Named]) -> None:
  """Refuses an output that is one of the inputs (the same file, by any name or link)."""
  for input_flag, input_path in inputs:
    if input_path and _same_file(path, input_path):
      raise UserError(f"{described}: is {input_flag}={input_path}; writing it would replace "
                      "the input: choose another path")


def distinct(outputs: Sequence[Named]) -> None:
  """Refuses two outputs of one program on the same path (one would overwrite the other)."""
  seen = {}
  for name, path in outputs:
    absolute = os.path.abspath(path)
    if absolute in seen:
      raise UserError(f"{seen[absolute]} and {name} would both be written to {path}; "
                      "choose another name")
    seen[absolute] = name


def _same_file(a: str, b: str) -> bool:
  if os.path.exists(a) and os.path.exists(b):
    return os.path.samefile(a, b)
  return os.path.realpath(a) == os.path.realpath(b)


def _check_writable(directory: str, described: str) -> None:
  # access(2) answers for the caller's rights and a read-only file system alike (root included).
  if not os.access(directory, os.W_OK | os.X_OK):
    reason = "read-only file system" if _read_only_mount(directory) else "no permission"
    raise UserError(f"{described}: cannot write in {directory} ({reason})")


def _read_only_mount(directory: str) -> bool:
  try:
    return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
  except OSError:
    return False
