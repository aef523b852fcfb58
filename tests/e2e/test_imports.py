"""Importing the library, first thing in a process or after the libraries underneath, and
loading a recipe change no environment variable."""

import ast
import subprocess
import sys

import jax  # noqa: F401  (see below)
import pytest

from helpers import ROOT
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e

# The test process imports JAX (a full run always has): the variables JAX's import sets
# (TPU_SKIP_MDS_QUERY) are inherited by the processes below, so that only TF_CPP_MIN_LOG_LEVEL,
# removed from their environment, shows as set again.
CHANGED = ("print({k: os.environ.get(k) for k in before.keys() | os.environ.keys() "
           "if before.get(k) != os.environ.get(k)})")


@pytest.mark.parametrize("imports, allowed", [
    # The package itself, first thing in a process (XLA flags take effect only then); JAX's
    # own import sets TF_CPP_MIN_LOG_LEVEL=1.
    ("import bloodcell_jax, bloodcell_jax.models", {"TF_CPP_MIN_LOG_LEVEL": "1"}),
    # A recipe and the pipeline, after the libraries underneath, which set variables of their
    # own on import (TensorFlow's TF2_BEHAVIOR, h5py's HDF5_PLUGIN_PATH).
    ("import tensorflow, h5py, sklearn, matplotlib, jax; before = dict(os.environ); "
     "import bloodcell_jax.data.pipeline, bloodcell_jax.trainer.run; from configs import effnet; "
     "effnet.get_config()", {})])
def test_importing_the_library_and_loading_a_config_change_no_environment_variable(imports,
                                                                                  allowed):
  code = f"import os; before = dict(os.environ); {imports}; {CHANGED}"
  env = {k: v for k, v in subprocess_env().items()
         if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True, timeout=120)
  assert ast.literal_eval(result.stdout.strip().splitlines()[-1]) == allowed
