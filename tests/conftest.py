"""Shared fixtures: tiny generated data, real-data paths, and a launcher for runs."""

import functools
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


# Small enough to train in seconds on 2 cores, big enough to learn something. No HTML report:
# its pictures cost seconds per run (tests/test_sweep.py checks the reports).
TINY_OVERRIDES = (
    "--config.image_size=32", "--config.data.synthetic_size=320",
    "--config.batch_size=16", "--config.eval_batch_size=32",
    "--config.model.filters=(8, 16, 16, 32)", "--config.model.dense_units=32",
    "--config.train.log_every_steps=4", "--config.eval.report=False",
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


# Keras parity (tests/test_efficientnet.py, tests/test_convnext_mobilenet.py).
PARITY_TOLERANCE = 1e-4  # max |flax - keras| / max |keras|, inference mode


@pytest.fixture(scope="session")
def keras_ref(tmp_path_factory):
  """Keras reference files (tests/keras_reference.py, run once in its own process)."""
  pytest.importorskip("keras")
  out = tmp_path_factory.mktemp("keras_ref")
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "keras_reference.py"), str(out)],
                 check=True, capture_output=True, env=subprocess_env(KERAS_BACKEND="tensorflow"),
                 timeout=900)
  return out


def relative_error(got, want) -> float:
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def compare_stages(intermediates, keras_blocks, tolerance=PARITY_TOLERANCE):
  """Asserts block by block, in order, so that a mismatch names the first block that differs."""
  for block in keras_blocks.files:
    got = intermediates[block]["__call__"][0]
    error = relative_error(got, keras_blocks[block])
    assert error <= tolerance, f"first mismatch at {block}: relative error {error:.2e}"


def run_with_intermediates(model, variables, images):
  import jax  # pylint: disable=g-import-not-at-top
  # Jitted: compiling the whole forward pass once is 10x faster than running it op by op.
  out, state = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                         mutable=["intermediates"]))(variables, images)
  return np.asarray(out), state["intermediates"]


def freezing_against_keras(config, record, image_size=64):
  """(ours, Keras's) frozen and trainable parameters per Flax module: Counters of module paths,
  Keras's weights mapped through the model's port (its running statistics left out)."""
  import collections  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from bloodcell_jax import models
  from bloodcell_jax.training import freezing  # pylint: disable=g-import-not-at-top
  port = models.get_spec(config.model.name).keras
  model = models.build_model(config, 8)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, image_size, image_size, 3))))
  labels = traverse_util.flatten_dict(freezing.freeze_labels(config, shapes["params"]), sep="/")
  ours = {state: collections.Counter(p.rsplit("/", 1)[0] for p, v in labels.items()
                                     if v == state) for state in ("freeze", "train")}
  keras_module = lambda path: port.module_path(path.split("/")[-2])
  keras = {"freeze": collections.Counter(map(keras_module, record["frozen"])),
           "train": collections.Counter(map(keras_module, record["trainable"]))}
  return ours, keras
