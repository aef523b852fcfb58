import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax.evaluation import executables
from helpers import ROOT


@pytest.fixture
def kept(tmp_path, monkeypatch):
  monkeypatch.setenv("BLOODCELL_JAX_COMPILATION_CACHE", str(tmp_path))
  return tmp_path / "executables"


def lowered_step():
  step = jax.jit(lambda state, x: (jnp.tanh(x @ state["w"]), x.sum()))
  return step.lower({"w": jax.ShapeDtypeStruct((4, 3), np.float32)},
                    jax.ShapeDtypeStruct((5, 4), np.float32))


def test_a_kept_executable_is_loaded_and_gives_the_same_results(kept):
  compiled, fresh = executables.compile_fresh(lowered_step())
  assert fresh
  name = executables.key("step", {"model": "cnn"}, (5, 4))
  executables.save(name, compiled)
  assert os.listdir(kept) == [name]
  loaded = executables.load(name)
  state = {"w": np.arange(12, dtype=np.float32).reshape(4, 3) / 10}
  x = np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)
  for ours, reference in zip(loaded(state, x), compiled(state, x)):
    np.testing.assert_array_equal(ours, reference)


def test_anything_that_decides_the_program_changes_the_key(kept):
  del kept
  names = {executables.key("step", {"model": "cnn"}, (5, 4)),
           executables.key("step", {"model": "cnn"}, (6, 4)),
           executables.key("step", {"model": "cnn", "image_size": 64}, (5, 4)),
           executables.key("other", {"model": "cnn"}, (5, 4))}
  assert len(names) == 4
  assert executables.key("step", {"model": "cnn"}, (5, 4)) in names  # and it is stable


def test_a_damaged_or_missing_file_is_compiled_again_and_old_files_go(kept):
  assert executables.load("absent.executable") is None
  kept.mkdir()
  (kept / "damaged.executable").write_bytes(b"not a pickle")
  assert executables.load("damaged.executable") is None
  os.utime(kept / "damaged.executable", (0, 0))  # the oldest
  compiled, _ = executables.compile_fresh(lowered_step())
  for i in range(executables.KEEP + 2):
    executables.save(f"{i:02d}.executable", compiled)
    os.utime(kept / f"{i:02d}.executable", (i, 1e9 + i))
  executables.save("newest.executable", compiled)
  remaining = sorted(os.listdir(kept))
  assert len(remaining) == executables.KEEP and "newest.executable" in remaining
  assert "00.executable" not in remaining and "damaged.executable" not in remaining


# Two processes: the first compiles into JAX's persistent cache; the second finds the program
# there, and must still keep an executable that runs when loaded again.
ROUND_TRIP = """
import sys
import numpy as np
from bloodcell_jax import runtime
runtime.set_up()
import jax, jax.numpy as jnp
from bloodcell_jax.evaluation import executables
step = jax.jit(lambda x: jnp.sin(x @ x.T).sum(0) + jnp.tanh(x).max())
lowered = step.lower(jax.ShapeDtypeStruct((64, 32), np.float32))
x = np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32)
if sys.argv[1] == "fill":
  lowered.compile()(x)
else:
  compiled, fresh = executables.compile_fresh(lowered)
  executables.save("round_trip.executable", compiled)
  print(fresh, np.array_equal(executables.load("round_trip.executable")(x), compiled(x)))
"""


def test_a_program_found_in_jaxs_cache_is_kept_as_one_that_runs(tmp_path):
  environ = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  environ.update(BLOODCELL_JAX_COMPILATION_CACHE=str(tmp_path),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  run = lambda stage: subprocess.run([sys.executable, "-c", ROUND_TRIP, stage], cwd=ROOT,
                                     env=environ, check=True, capture_output=True,
                                     text=True).stdout.strip()
  run("fill")
  assert any(name.endswith("-cache") for name in os.listdir(tmp_path))
  assert run("keep") == "True True"
