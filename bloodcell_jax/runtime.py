"""Process-wide settings, made by the entry points (launch.py, the module CLIs, the benchmarks,
the tests' conftest), never by importing the library.

`set_up()`:
* XLA:CPU in jaxlib 0.10 hands convolution-adjacent fusions to YNNPACK, which makes the CNN
  train step 2x slower on x86 CPUs (measured in benchmarks/train_step.py); it is turned off
  unless XLA_FLAGS already names the flag or BLOODCELL_JAX_KEEP_XLA_FLAGS=1. Flags only take
  effect before JAX starts its backend, and XLA rejects flags it does not know, so this is
  limited to the jaxlib series where the flag was measured, and to a backend not started yet.
* TensorFlow only runs the input pipeline: its C++ warnings (grappler cannot size ops on
  batches of varying length, which the per-image op choice makes) would flood the training
  log, so TF_CPP_MIN_LOG_LEVEL defaults to 2.

`keep_tensorflow_on_host()` (imports TensorFlow, so called where the pipeline is about to run):
TensorFlow sees no GPU or TPU, whose memory belongs to JAX.

`restart_with_tcmalloc()` (the programs' entry point, before anything heavy is imported):
XLA:CPU executables allocate and free their temporary buffers on every step; glibc's malloc
hands large ones back to the kernel and page-faults them in again, tcmalloc keeps them. Where
tcmalloc is installed (Debian/Ubuntu: libtcmalloc-minimal4) and not loaded yet, the program
starts again with it preloaded, unless BLOODCELL_JAX_ALLOCATOR=system. `allocator()` says
which one runs, for the log.
"""

import ctypes.util
import importlib.metadata
import os
import sys

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_YNN_FLAG_SERIES = ("0.10.",)


def set_up() -> None:
  _tune_xla_cpu_flags()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _jax_backend_started() -> bool:
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  started = getattr(xla_bridge, "backends_are_initialized", None)
  return started() if started else True  # unknown: assume too late


def _tune_xla_cpu_flags() -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if os.environ.get("BLOODCELL_JAX_KEEP_XLA_FLAGS") or _YNN_FLAG in flags:
    return
  try:
    jaxlib_version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return
  if jaxlib_version.startswith(_YNN_FLAG_SERIES) and not _jax_backend_started():
    os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}=".strip()


def keep_tensorflow_on_host() -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (ValueError, RuntimeError):  # a kind TensorFlow does not know, or already in use
      pass


_ALLOCATOR_ENV = "BLOODCELL_JAX_ALLOCATOR"
_TCMALLOC = "tcmalloc_minimal"


def allocator() -> str:
  """'tcmalloc' when it serves this process's memory, else 'system'."""
  try:
    with open("/proc/self/maps", encoding="utf-8") as maps:
      return "tcmalloc" if "libtcmalloc" in maps.read() else "system"
  except OSError:  # not Linux
    return "system"


def restart_with_tcmalloc() -> None:
  """Replaces this process by the same command with tcmalloc preloaded, where that applies
  (module docstring); returns where it does not. Only for a program's entry point."""
  if os.environ.get(_ALLOCATOR_ENV) or not sys.platform.startswith("linux"):
    return  # asked for, or already restarted (the variable says which allocator was chosen)
  library = ctypes.util.find_library(_TCMALLOC)
  if not library or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
    return
  env = {**os.environ, _ALLOCATOR_ENV: "tcmalloc",
         "LD_PRELOAD": " ".join(filter(None, (os.environ.get("LD_PRELOAD"), library)))}
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
  except OSError:
    pass  # the program goes on with the system allocator; allocator() says so
