"""Shared fixtures: tiny generated data, real-data paths, and a launcher for runs."""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image

from bloodcell_jax import runtime

runtime.set_up()  # the test process runs the library as the entry points do

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PBC96 = os.path.join(ROOT, "..", "shared", "data", "pbc96")

# One XLA compilation cache for the session's subprocesses: dozens of tiny runs compile the
# same programs, and a cached executable is the same code as a fresh compile (it halves a
# tiny run's start-up). Not for this process: it runs models op by op, and writing each
# op's executable to the cache costs more than compiling it.
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(prefix="bloodcell_jax_tests_xla_"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  shutil.rmtree(COMPILATION_CACHE["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Small enough to train in seconds on 2 cores, big enough to learn something.
TINY_OVERRIDES = (
    "--config.image_size=32", "--config.data.synthetic_size=320",
    "--config.batch_size=16", "--config.eval_batch_size=32",
    "--config.model.filters=(8, 16, 16, 32)", "--config.model.dense_units=32",
    "--config.train.log_every_steps=4",
)


# One run that several modules read (tests/test_launch.py, tests/test_resume.py): 12 epochs
# with BatchNorm, whose statistics must survive restarts too, a checkpoint every 3 steps and
# no early stopping.
TRAINED_RUN_OVERRIDES = ("--config.num_epochs=12", "--config.train.checkpoint_every_steps=3",
                         "--config.train.early_stopping_patience=0", "--config.model.norm=batch")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """(workdir, CompletedProcess) of the tiny recipe trained with TRAINED_RUN_OVERRIDES."""
  workdir = str(tmp_path_factory.mktemp("trained_run"))
  return workdir, run_launch(workdir, *TRAINED_RUN_OVERRIDES)


@pytest.fixture
def pbc96():
  if not os.path.isdir(PBC96):
    pytest.skip(f"real data not present at {PBC96}")
  return PBC96


def write_image_folder(root, images_per_class=4, size=24, classes=("a", "b", "c"), seed=0):
  """An ImageFolder of random JPEGs (and a README beside the class folders)."""
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "README.md"), "w") as f:
    f.write("not an image\n")
  for name in classes:
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(images_per_class):
      pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, name, f"{name}_{i}.png"))
  return root


def run_launch(workdir, *overrides, config="configs/cnn.py", timeout=600, tiny=True,
               check=True, extra_env=None):
  """Runs launch.py in a subprocess; returns the CompletedProcess."""
  args = [sys.executable, os.path.join(ROOT, "launch.py"), f"--config={config}",
          f"--workdir={workdir}", *(TINY_OVERRIDES if tiny else ()), *overrides]
  result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(**(extra_env or {})))
  if check and result.returncode != 0:
    raise AssertionError(f"launch.py failed ({result.returncode}):\n{result.stderr[-4000:]}")
  return result


def subprocess_env(**extra):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **COMPILATION_CACHE}
  env.update(extra)
  return env
