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
"""

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
