"""Compiled forward passes kept on disk from one program to the next (`predict`'s).

JAX's persistent compilation cache (runtime.py) spares XLA's compile, but a program still
traces its model and lowers it to find the cache entry: for the CNN that is 0.2-0.4 s of
Python in a 4 s prediction of 1,000 images, about what a LiteRT export spends on its whole
start-up. Here the executable itself is kept, under a key of everything that decides it: the
run's recorded config, the step and its input shapes, every source file of this library, the
versions of JAX, jaxlib and flax, the devices, XLA_FLAGS, JAX's numerics flags and the
project's CPU kernels (models/native.py; working out the key registers them, which a kept
program that calls them needs before it loads). Any change
gives another key, so a stale file is never run; an unreadable one is compiled again and
written over, and one that fails when run is removed (the caller computes with the jitted
step instead). The files go beside JAX's cache (`executables/` in
runtime.compilation_cache_folder(); none when it is off), the newest 32 kept.

A program kept here is compiled without JAX's cache: on CPU an executable loaded from that
cache cannot be serialized again (jaxlib 0.10: run after a second load, its functions are
missing). Where this JAX has no per-thread switch for it, nothing is kept.
"""

import functools
import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import pickle
from typing import Any, Optional

import jax
from jax.experimental import serialize_executable

import bloodcell_jax
from bloodcell_jax import atomic, runtime
from bloodcell_jax.errors import UserError
from bloodcell_jax.models import native

KEEP = 32


def folder() -> str:
  cache = runtime.compilation_cache_folder()
  return os.path.join(cache, "executables") if cache else ""


@functools.lru_cache(maxsize=1)
def _library_digest() -> str:
  """The library's source: any edit recompiles (5 ms for 120 files)."""
  digest = hashlib.sha256()
  root = os.path.dirname(bloodcell_jax.__file__)
  for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
    digest.update(os.path.relpath(path, root).encode())
    with open(path, "rb") as f:
      digest.update(f.read())
  return digest.hexdigest()


def _versions() -> dict:
  found = {}
  for package in ("jax", "jaxlib", "flax"):
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


def key(*parts: Any) -> str:
  """A file name for the executable that `parts` (JSON-able: the config, the step's name, the
  input shapes) and this process's library, JAX and devices give."""
  devices = [(d.platform, d.device_kind) for d in jax.devices()]
  numerics = {name: jax.config.values.get(name) for name in
              ("jax_enable_x64", "jax_default_matmul_precision")}
  everything = [_library_digest(), _versions(), devices, os.environ.get("XLA_FLAGS", ""),
                numerics, native.status(), parts]
  text = json.dumps(everything, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:32] + ".executable"


def load(name: str) -> Optional[jax.stages.Compiled]:
  """The executable saved as `name`, loaded on this process's devices; None when there is
  none, or it cannot be read (then it is compiled again and written over)."""
  kept = folder()
  path = os.path.join(kept, name) if kept else ""
  if not path or not os.path.isfile(path):
    return None
  try:
    with open(path, "rb") as f:
      saved = pickle.load(f)
    compiled = serialize_executable.deserialize_and_load(
        saved["executable"], jax.tree.structure(saved["inputs"]),
        jax.tree.structure(saved["outputs"]))
    os.utime(path)  # recently used: kept longest
    return compiled
  except Exception as e:  # pylint: disable=broad-except  (any damage: compile instead)
    logging.warning("%s: not loaded (%s); compiling instead", path, e)
    return None


def compile_fresh(lowered) -> tuple:
  """(lowered.compile(), whether it may be saved): compiled past JAX's persistent cache."""
  try:
    from jax._src import config as jax_config  # pylint: disable=g-import-not-at-top
    past_the_cache = jax_config.enable_compilation_cache(False)  # this thread only
  except (ImportError, AttributeError, TypeError):
    return lowered.compile(), False
  with past_the_cache:
    return lowered.compile(), True


def forget(name: str) -> None:
  """Removes a kept executable that could not run."""
  try:
    os.remove(os.path.join(folder(), name))
  except OSError:
    pass


def save(name: str, compiled: jax.stages.Compiled) -> None:
  """Writes `compiled` as `name` (whole or not at all) and keeps the newest KEEP files; a
  backend that cannot serialize, or a folder that cannot be written, is passed over."""
  kept = folder()
  if not kept:
    return
  try:
    serialized, inputs, outputs = serialize_executable.serialize(compiled)
    skeleton = lambda tree: jax.tree.unflatten(tree, [0] * tree.num_leaves)
    data = pickle.dumps({"executable": serialized, "inputs": skeleton(inputs),
                         "outputs": skeleton(outputs)})
    os.makedirs(kept, exist_ok=True)
    atomic.write_bytes(os.path.join(kept, name), data)
  except (ValueError, NotImplementedError, OSError, UserError, pickle.PicklingError) as e:
    logging.info("compiled program not kept (%s)", e)
    return
  _keep_newest(kept, KEEP)


def _keep_newest(kept: str, count: int) -> None:
  paths = sorted(glob.glob(os.path.join(kept, "*.executable")), key=_modified, reverse=True)
  for path in paths[count:]:
    try:
      os.remove(path)
    except OSError:
      pass  # another program removed it first


def _modified(path: str) -> float:
  try:
    return os.path.getmtime(path)
  except OSError:
    return 0.0
