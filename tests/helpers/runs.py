"""Programs in subprocesses: launch.py and `python -m` modules, with the tests' environment."""

import os
import subprocess
import sys
import tempfile

from helpers import ROOT

# One XLA compilation cache for the session's subprocesses: dozens of tiny runs compile the
# same programs, and a cached executable is the same code as a fresh compile (it halves a
# tiny run's start-up). predict keeps its executables there too (evaluation/executables.py).
# Not for the test process: it runs models op by op, and writing each op's executable to the
# cache costs more than compiling it. tests/conftest.py removes it.
_CACHE_FOLDER = tempfile.mkdtemp(prefix="bloodcell_jax_tests_xla_")
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": _CACHE_FOLDER,
    "BLOODCELL_JAX_COMPILATION_CACHE": _CACHE_FOLDER,
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}

# Small enough to train in seconds on 2 cores, big enough to learn something. No HTML report:
# its pictures cost seconds per run (tests/e2e/test_sweep.py checks the reports).
TINY_OVERRIDES = (
    "--config.image_size=32", "--config.data.synthetic_size=320",
    "--config.batch_size=16", "--config.eval_batch_size=32",
    "--config.model.filters=(8, 16, 16, 32)", "--config.model.dense_units=32",
    "--config.train.log_every_steps=4", "--config.eval.report=False",
)

# The run that several modules read (the `trained_run` fixture of tests/e2e/conftest.py): 12
# epochs with BatchNorm, whose statistics must survive restarts too, a checkpoint every 3 steps
# and no early stopping.
TRAINED_RUN_OVERRIDES = ("--config.num_epochs=12", "--config.train.checkpoint_every_steps=3",
                         "--config.train.early_stopping_patience=0", "--config.model.norm=batch")


def subprocess_env(**extra):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **COMPILATION_CACHE}
  env.update(extra)
  return env


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


def run_module(module, *args):
  """Runs `python -m module args...`: (exit code, stdout, [the last line of stderr] or [])."""
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, env=subprocess_env(), timeout=600)
  return result.returncode, result.stdout, result.stderr.strip().splitlines()[-1:]


def tiny_cnn_config():
  """configs/default.py's CNN at 16x16 pixels on 96 synthetic images for 2 epochs: a run that
  trains in process in seconds."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update(image_size=16, batch_size=16, eval_batch_size=32, num_epochs=2)
  config.model.filters = (4, 8, 8, 8)
  config.model.dense_units = 8
  config.data.synthetic_size = 96
  config.data.val_fraction = 0.25
  config.augment.train = "flip"
  return config
