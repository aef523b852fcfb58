"""Session fixtures and set-up shared by every test package (helpers live in tests/helpers/)."""

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import settings

from bloodcell_jax import runtime
from helpers import PBC96, ROOT, runs

# The test process runs the library as the entry points do, without their compilation cache
# in the user's folder (its subprocesses share one of their own: helpers/runs.py).
os.environ.setdefault("BLOODCELL_JAX_COMPILATION_CACHE", "off")
runtime.set_up()

# Property-based tests search new cases on every local run; in CI they replay a fixed search,
# so that a landing never depends on luck (a failure found locally is kept in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
  settings.load_profile("ci")


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(runs.COMPILATION_CACHE["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def pbc96():
  if not os.path.isdir(PBC96):
    pytest.skip(f"real data not present at {PBC96}")
  return PBC96


@pytest.fixture(scope="session")
def keras_ref(tmp_path_factory):
  """Keras reference files (helpers/keras_reference.py, run once in its own process)."""
  pytest.importorskip("keras")
  out = tmp_path_factory.mktemp("keras_ref")
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "keras_reference.py"),
                  str(out)], check=True, capture_output=True,
                 env=runs.subprocess_env(KERAS_BACKEND="tensorflow"), timeout=900)
  return out
