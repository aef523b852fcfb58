"""Process-wide settings, made by the entry points (launch.py, the module CLIs, the benchmarks,
the tests' conftest), never by importing the library.

`set_up()`:
* XLA:CPU in jaxlib 0.10 hands convolution-adjacent fusions to YNNPACK, which makes the CNN
  train step 2x slower on x86 CPUs (measured in benchmarks/train_step.py); it is turned off
  unless XLA_FLAGS already names the flag or BLOODCELL_JAX_KEEP_XLA_FLAGS=1. Flags only take
  effect before JAX starts its backend, and XLA rejects flags it does not know, so this is
  limited to the jaxlib series where the flag was measured, and to a backend not started yet.
* Compiled XLA programs are kept on disk (JAX's persistent compilation cache) and reused by the
  next program that compiles the same one: `predict` on a CNN run compiles its forward pass in
  about 1 s of its 4-5 s, and a cached one loads in a fraction of that. The folder is
  $BLOODCELL_JAX_COMPILATION_CACHE, else $XDG_CACHE_HOME/bloodcell_jax/xla (~/.cache/...),
  kept under 1 GiB (least recently used first out) where the `filelock` package is installed;
  compilations under 0.2 s are not kept. BLOODCELL_JAX_COMPILATION_CACHE=off, or JAX's own
  JAX_COMPILATION_CACHE_DIR, leaves JAX's settings alone. A cached program is the same
  executable as a fresh compile: results do not change.
* TensorFlow only runs the input pipeline: its C++ warnings (grappler cannot size ops on
  batches of varying length, which the per-image op choice makes) would flood the training
  log, so TF_CPP_MIN_LOG_LEVEL defaults to 2.

`cpu_multiplies_bfloat16()`: whether the CPU has bfloat16 dot-product instructions, which
`config.model.dtype="auto"` computes in (read from /proc/cpuinfo).

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
import functools
import importlib.metadata
import importlib.util
import os
import sys

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_YNN_FLAG_SERIES = ("0.10.",)
# /proc/cpuinfo's names for bfloat16 dot products: x86 AVX-512 BF16 and AMX, Arm's BF16.
_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def set_up() -> None:
  _tune_xla_cpu_flags()
  _cache_compilations()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


_CACHE_ENV = "BLOODCELL_JAX_COMPILATION_CACHE"
# JAX's options, as their environment variables, and their types.
_CACHE_OPTIONS = {"JAX_COMPILATION_CACHE_DIR": str,
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": float,
                  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": int,
                  "JAX_COMPILATION_CACHE_MAX_SIZE": int}
_CACHE_MIN_COMPILE_SECONDS = "0.2"
_CACHE_MAX_BYTES = str(1 << 30)  # evicting needs filelock (JAX refuses a limit without it)


def user_cache_folder(name: str) -> str:
  """$XDG_CACHE_HOME/bloodcell_jax/`name` (~/.cache/bloodcell_jax/`name` without it)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "bloodcell_jax", name)


def compilation_cache_folder() -> str:
  """Where `set_up` keeps compiled programs ("" when off)."""
  choice = os.environ.get(_CACHE_ENV, "")
  if choice == "off":
    return ""
  return choice or user_cache_folder("xla")


def _cache_compilations() -> None:
  folder = compilation_cache_folder()
  if not folder or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError:
    return  # a read-only home: every program compiles, as without the cache
  if not os.access(folder, os.W_OK):
    return
  settings = {"JAX_COMPILATION_CACHE_DIR": folder,
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": _CACHE_MIN_COMPILE_SECONDS,
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  if importlib.util.find_spec("filelock"):
    settings["JAX_COMPILATION_CACHE_MAX_SIZE"] = _CACHE_MAX_BYTES
  for name, value in settings.items():
    os.environ.setdefault(name, value)
  if "jax" in sys.modules:  # JAX read its environment when it was imported
    import jax  # pylint: disable=g-import-not-at-top
    for name in settings:
      jax.config.update(name.lower(), _CACHE_OPTIONS[name](os.environ[name]))


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


@functools.lru_cache(maxsize=None)
def cpu_multiplies_bfloat16() -> bool:
  """Whether this machine's CPU has bfloat16 dot-product instructions (False where
  /proc/cpuinfo cannot tell)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
      return bfloat16_in_cpuinfo(cpuinfo.read())
  except OSError:
    return False


def bfloat16_in_cpuinfo(text: str) -> bool:
  """Whether /proc/cpuinfo's `text` lists a bfloat16 dot-product feature (x86's "flags", Arm's
  "Features")."""
  for line in text.splitlines():
    name, _, value = line.partition(":")
    if name.strip() in ("flags", "Features") and _BFLOAT16_CPU_FLAGS & set(value.split()):
      return True
  return False


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
