"""Convolutions by oneDNN on XLA:CPU, the kernels TensorFlow's CPU builds use.

XLA:CPU's own convolutions (Eigen) take 1.15-2.1x oneDNN's time at this project's shapes,
forward and both gradients (benchmarks/onednn.py); its kernel gradients transpose their
operands first. Where a program runs on one CPU device, `conv_general_dilated` (nn.Conv's
`conv_general_dilated`) hands 2-D convolutions in float32 or bfloat16 to oneDNN through an
XLA FFI custom call (onednn_conv.cc), with their gradients by oneDNN too; anything else
(dilations, groups, other platforms, several devices, exports: `portable.standard_ops()`
and `serialized()`) is `lax.conv_general_dilated`.

The handler is compiled once per machine with the C++ compiler ($CXX, else g++) against
oneDNN 3 (the `onednn-cpu-gomp` and `onednn-devel-cpu-gomp` wheels in requirements.txt, or
$DNNLROOT) and JAX's FFI headers, into $XDG_CACHE_HOME/bloodcell_jax/onednn (~/.cache/...),
keyed by the source, jaxlib and oneDNN. Where that cannot be done the log says why, once, and
XLA's convolutions run: slower, the same results up to float rounding.
BLOODCELL_JAX_ONEDNN=off turns it off.

Several CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count, multi-process CPU
runs) keep XLA's convolutions: the partitioner cannot split a custom call over a sharded
batch, and would gather it whole onto every device.
"""

import contextlib
import ctypes
import functools
import glob
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bloodcell_jax import runtime
from bloodcell_jax.models import portable

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
_TARGET = "bloodcell_jax_onednn_conv"
_SYMBOL = "BloodcellJaxOnednnConv"
_ENV = "BLOODCELL_JAX_ONEDNN"
_NHWC = ("NHWC", "HWIO", "NHWC")
_KINDS = {"forward": 0, "input_gradient": 1, "kernel_gradient": 2}
_BUILD_SECONDS = 300


class Unavailable(Exception):
  """Why oneDNN's convolutions cannot run here (a line for the log)."""


@functools.lru_cache(maxsize=1)
def library() -> str:
  """The compiled handler's path, registered with XLA:CPU; "" where it cannot be (logged)."""
  try:
    path = _build()
    handler = getattr(ctypes.CDLL(path), _SYMBOL)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return path
  except (Unavailable, OSError, AttributeError) as e:
    if os.environ.get(_ENV) != "off":
      logging.warning("XLA's convolutions, not oneDNN's: %s", e)
    return ""


_serialized = False


@contextlib.contextmanager
def serialized():
  """Traces inside are written out (a SavedModel's StableHLO), where a custom call of this
  process cannot go: XLA's convolutions."""
  global _serialized
  previous, _serialized = _serialized, True
  try:
    yield
  finally:
    _serialized = previous


def in_use() -> bool:
  """Whether convolutions traced now go to oneDNN."""
  if (_serialized or portable.enabled() or jax.default_backend() != "cpu"
      or jax.device_count() != 1):
    return False
  return bool(library())


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding,
                         lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, by oneDNN where it can (module docstring)."""
  xla = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
      precision=precision, preferred_element_type=preferred_element_type)
  plain = (lhs.ndim == 4 and rhs.ndim == 4 and batch_group_count == 1
           and preferred_element_type is None and lhs.dtype == rhs.dtype
           and lhs.dtype in (jnp.float32, jnp.bfloat16)
           and all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           and _is_nhwc(lhs.shape, rhs.shape, dimension_numbers))
  if not (plain and in_use()):
    return xla()
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  padding = tuple((int(low), int(high)) for low, high in padding)
  if any(p < 0 for pair in padding for p in pair):
    return xla()
  return conv(lhs, rhs, tuple(int(s) for s in window_strides), padding, feature_group_count)


def _is_nhwc(lhs_shape, rhs_shape, dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  wanted = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)
  return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == wanted


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x, kernel, strides: Tuple[int, int], padding: Tuple[Tuple[int, int], ...],
         groups: int = 1):
  """A convolution of NHWC `x` with an HWIO `kernel` by oneDNN (`library()` must be set up),
  explicit `padding` ((top, bottom), (left, right)); `groups` as lax's feature_group_count."""
  return _call("forward", x, kernel, _output_shape(x.shape, kernel.shape, strides, padding),
               x.dtype, strides, padding, groups)


def _conv_forward(x, kernel, strides, padding, groups):
  return conv(x, kernel, strides, padding, groups), (x, kernel)


def _conv_backward(strides, padding, groups, residuals, g):
  x, kernel = residuals
  g = g.astype(x.dtype)
  # XLA drops the input gradient where nothing needs it (a network's first layer).
  return (_call("input_gradient", g, kernel, x.shape, x.dtype, strides, padding, groups),
          _call("kernel_gradient", x, g, kernel.shape, kernel.dtype, strides, padding, groups))


conv.defvjp(_conv_forward, _conv_backward)


def _output_shape(x_shape, kernel_shape, strides, padding):
  spatial = [(size + low + high - k) // s + 1 for size, k, s, (low, high)
             in zip(x_shape[1:3], kernel_shape[:2], strides, padding)]
  return (x_shape[0], *spatial, kernel_shape[3])


def _call(kind, a, b, shape, dtype, strides, padding, groups):
  (top, bottom), (left, right) = padding
  attributes = dict(kind=_KINDS[kind], stride_h=strides[0], stride_w=strides[1], pad_top=top,
                    pad_left=left, pad_bottom=bottom, pad_right=right, groups=groups)
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(shape, dtype),
                          vmap_method="sequential")
  return call(a, b, **{name: np.int64(value) for name, value in attributes.items()})


# --- building the handler ---------------------------------------------------------------

def _build() -> str:
  if os.environ.get(_ENV) == "off":
    raise Unavailable(f"{_ENV}=off")
  compiler = shutil.which(os.environ.get("CXX", "g++"))
  if not compiler:
    raise Unavailable(f"no C++ compiler ({os.environ.get('CXX', 'g++')}) to build "
                      f"{os.path.basename(_SOURCE)}; install g++ (Debian: apt-get install g++)")
  root = _onednn_root()
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", _SOURCE,
             "-I" + jax.ffi.include_dir(), "-I" + os.path.join(root, "include"),
             "-L" + os.path.join(root, "lib"), "-ldnnl",
             "-Wl,-rpath," + os.path.join(root, "lib")]
  path = os.path.join(runtime.user_cache_folder("onednn"), f"onednn_conv-{_digest(command)}.so")
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  partial = f"{path}.{os.getpid()}.partial"
  try:
    done = subprocess.run(command + ["-o", partial], capture_output=True, text=True,
                          timeout=_BUILD_SECONDS, check=False)
  except subprocess.TimeoutExpired as e:
    raise Unavailable(f"building {_SOURCE} took over {_BUILD_SECONDS} s") from e
  if done.returncode != 0:
    lines = done.stderr.strip().splitlines() or ["no output"]
    last = next((line for line in lines if "error" in line), lines[-1])
    raise Unavailable(f"{compiler} could not build {_SOURCE}: {last}")
  os.replace(partial, path)
  logging.info("built oneDNN's convolutions for XLA:CPU: %s", path)
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
  with open(_SOURCE, "rb") as f:
    digest.update(f.read())
  for package in ("jaxlib", "onednn-cpu-gomp"):
    digest.update(_version(package).encode())
  return digest.hexdigest()[:16]


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return "none"


def status() -> Optional[str]:
  """For the executables key: the handler in use, or None."""
  return os.path.basename(library()) if in_use() else None
