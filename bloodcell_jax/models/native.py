"""CPU kernels of this project, compiled on first use and called by XLA:CPU as FFI handlers:
oneDNN's convolutions (onednn_conv.cc, used by models/onednn.py) and the data transforms of
Winograd's convolutions (winograd_transforms.cc, used by models/winograd.py).

They are compiled once per machine with the C++ compiler ($CXX, else g++), for its CPU
(-march=native), against oneDNN 3 (the `onednn-cpu-gomp` and `onednn-devel-cpu-gomp` wheels
in requirements.txt, or $DNNLROOT) and JAX's FFI headers, into
$XDG_CACHE_HOME/bloodcell_jax/cpu_kernels (~/.cache/...), keyed by the sources, the command,
the CPU, jaxlib and oneDNN. Where that cannot be done the log says why, once, and XLA's own
operations run: slower, the same results up to float rounding.
BLOODCELL_JAX_CPU_KERNELS=off turns them off.

They run where a program runs on one CPU device. Several CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count, multi-process CPU runs) keep XLA's
operations: the partitioner cannot split a custom call over a sharded batch, and would gather
it whole onto every device. So do GPUs and TPUs, and programs written out (exports:
`portable.standard_ops()` and `serialized()`).
"""

import contextlib
import ctypes
import functools
import glob
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
from typing import Optional

import jax

from bloodcell_jax import runtime
from bloodcell_jax.models import portable

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCES = tuple(os.path.join(_HERE, name)
                 for name in ("onednn_conv.cc", "winograd_transforms.cc"))
# FFI target name -> the handler's symbol in the library.
TARGETS = {
    "bloodcell_jax_onednn_conv": "BloodcellJaxOnednnConv",
    "bloodcell_jax_winograd_input": "BloodcellJaxWinogradInput",
    "bloodcell_jax_winograd_output": "BloodcellJaxWinogradOutput",
    "bloodcell_jax_winograd_output_grad": "BloodcellJaxWinogradOutputGrad",
    "bloodcell_jax_winograd_output_max": "BloodcellJaxWinogradOutputMax",
    "bloodcell_jax_winograd_output_max_grad": "BloodcellJaxWinogradOutputMaxGrad",
    "bloodcell_jax_winograd_input_grad": "BloodcellJaxWinogradInputGrad",
}
_ENV = "BLOODCELL_JAX_CPU_KERNELS"
_BUILD_SECONDS = 300


class Unavailable(Exception):
  """Why the kernels cannot run here (a line for the log)."""


@functools.lru_cache(maxsize=1)
def library() -> str:
  """The compiled library's path, its handlers registered with XLA:CPU; "" where it cannot
  be (logged)."""
  try:
    path = _build()
    built = ctypes.CDLL(path)
    for target, symbol in TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(built, symbol)),
                                  platform="cpu")
    return path
  except (Unavailable, OSError, AttributeError) as e:
    if os.environ.get(_ENV) != "off":
      logging.warning("XLA's own convolutions, not this project's CPU kernels: %s", e)
    return ""


_serialized = False


@contextlib.contextmanager
def serialized():
  """Traces inside are written out (a SavedModel's StableHLO), where a custom call of this
  process cannot go: XLA's operations."""
  global _serialized
  previous, _serialized = _serialized, True
  try:
    yield
  finally:
    _serialized = previous


def in_use() -> bool:
  """Whether what is traced now calls the kernels."""
  if (_serialized or portable.enabled() or jax.default_backend() != "cpu"
      or jax.device_count() != 1):
    return False
  return bool(library())


def status() -> Optional[str]:
  """For the executables key: the library in use, or None."""
  return os.path.basename(library()) if in_use() else None


def _build() -> str:
  if os.environ.get(_ENV) == "off":
    raise Unavailable(f"{_ENV}=off")
  compiler = shutil.which(os.environ.get("CXX", "g++"))
  if not compiler:
    raise Unavailable(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) to build "
                      f"{' and '.join(os.path.basename(s) for s in _SOURCES)}; install g++ "
                      "(Debian: apt-get install g++)")
  root = _onednn_root()
  # -march=native: the transforms are written as 16-float vectors, AVX-512 where there is
  # one; the digest has the CPU in it. -fopenmp: their loops run on every core.
  command = [compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp",
             "-w", *_SOURCES,
             "-I" + jax.ffi.include_dir(), "-I" + os.path.join(root, "include"),
             "-L" + os.path.join(root, "lib"), "-ldnnl",
             "-Wl,-rpath," + os.path.join(root, "lib")]
  path = os.path.join(runtime.user_cache_folder("cpu_kernels"),
                      f"cpu_kernels-{_digest(command)}.so")
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = f"{path}.{os.getpid()}.partial"
  try:
    done = subprocess.run(command + ["-o", partial], capture_output=True, text=True,
                          timeout=_BUILD_SECONDS, check=False)
  except subprocess.TimeoutExpired as e:
    raise Unavailable(f"building the CPU kernels took over {_BUILD_SECONDS} s") from e
  if done.returncode != 0:
    lines = done.stderr.strip().splitlines() or ["no output"]
    last = next((line for line in lines if "error" in line), lines[-1])
    raise Unavailable(f"{compiler} could not build {_HERE}/*.cc: {last}")
  os.replace(partial, path)
  logging.info("built the CPU kernels for XLA:CPU: %s", path)
  return path


def _onednn_root() -> str:
  """A prefix with oneDNN 3's headers (include/oneapi/dnnl) and library (lib/libdnnl.so)."""
  candidates = [os.environ.get("DNNLROOT", ""), sys.prefix, "/usr/local", "/usr"]
  for root in filter(None, candidates):
    if (os.path.exists(os.path.join(root, "include", "oneapi", "dnnl", "dnnl.hpp"))
        and glob.glob(os.path.join(root, "lib", "libdnnl.so*"))):
      return root
  raise Unavailable("no oneDNN 3 (include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so) under "
                    f"$DNNLROOT or {sys.prefix} (on x86-64 Linux, pip install -r requirements.txt "
                    "installs it)")


def _digest(command) -> str:
  digest = hashlib.sha256(" ".join(command).encode())
  for source in _SOURCES:
    with open(source, "rb") as f:
      digest.update(f.read())
  for package in ("jaxlib", "onednn-cpu-gomp"):
    digest.update(_version(package).encode())
  digest.update(_cpu().encode())
  return digest.hexdigest()[:16]


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "none"


def _cpu() -> str:
  """The CPU's model and features (-march=native builds for them)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().split("\n\n")[0].splitlines()
    return "".join(line for line in lines if line.startswith(("model name", "flags")))
  except OSError:
    return platform.processor()
