"""bloodcell_jax: peripheral blood cell classification in JAX/Flax."""

import importlib.metadata
import os
import sys

__version__ = "0.1.0"

# XLA:CPU in jaxlib 0.10 hands convolution-adjacent fusions to YNNPACK, which
# makes the CNN train step 2x slower on x86 CPUs (measured in
# benchmarks/train_step.py). Turn that off unless the user chose otherwise.
# Flags only take effect before JAX starts its backend, and XLA rejects flags
# it does not know, so this is limited to the jaxlib series where the flag was
# measured. BLOODCELL_JAX_KEEP_XLA_FLAGS=1 leaves XLA_FLAGS alone.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_YNN_FLAG_SERIES = ("0.10.",)


def _tune_xla_cpu_flags() -> None:
  if os.environ.get("BLOODCELL_JAX_KEEP_XLA_FLAGS") or "jax" in sys.modules:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if _YNN_FLAG in flags:
    return
  try:
    jaxlib_version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return
  if jaxlib_version.startswith(_YNN_FLAG_SERIES):
    os.environ["XLA_FLAGS"] = f"{flags} {_YNN_FLAG}=".strip()


_tune_xla_cpu_flags()

# TensorFlow only runs the input pipeline here; its C++ warnings (grappler's cost model
# cannot size ops on batches of varying length, which the per-image op choice makes)
# would flood the training log. Set TF_CPP_MIN_LOG_LEVEL yourself to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
