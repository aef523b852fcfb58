"""A run killed (SIGKILL, also in the middle of checkpoint writes) or preempted (SIGTERM)
and started again ends bit-for-bit like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, TINY_OVERRIDES, TRAINED_RUN_OVERRIDES as OVERRIDES, run_launch, \
    subprocess_env

TOTAL_STEPS = 12 * 18  # 288 training images in batches of 16


def final_state(workdir):
  """(step, state as numpy arrays) of the newest checkpoint, whatever devices saved it and
  in the dtypes it was saved in (float64 too)."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints", "latest"),
                                  item_names=("state", "meta"))
  step = manager.latest_step()
  with jax.enable_x64(True):
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
        fallback_sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))))
    state = jax.tree.map(np.asarray, restored["state"])
  manager.close()
  return step, state


def finished_steps(workdir):
  directory = os.path.join(workdir, "checkpoints", "latest")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def start_run(workdir, *extra):
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/cnn.py",
          f"--workdir={workdir}", *TINY_OVERRIDES, *OVERRIDES, *extra]
  return subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


def wait_for_checkpoint(process, workdir, at_least):
  deadline = time.time() + 300
  while time.time() < deadline and not [s for s in finished_steps(workdir) if s >= at_least]:
    assert process.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.02)


def assert_same_final_state(workdir_a, workdir_b):
  step_a, state_a = final_state(workdir_a)
  step_b, state_b = final_state(workdir_b)
  assert step_a == step_b == TOTAL_STEPS
  leaves_a, tree_a = jax.tree.flatten(state_a)
  leaves_b, tree_b = jax.tree.flatten(state_b)
  assert tree_a == tree_b
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigterm_saves_exits_zero_and_resumes_exactly(trained_run, tmp_path):
  preempted = str(tmp_path / "preempted")
  process = start_run(preempted)
  wait_for_checkpoint(process, preempted, 24)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=60) == 0
  saved = max(finished_steps(preempted))
  assert saved < TOTAL_STEPS and not os.path.exists(os.path.join(preempted, "results.json"))

  result = run_launch(preempted, *OVERRIDES)
  assert f"at step {saved}" in result.stderr
  assert_same_final_state(trained_run[0], preempted)


def checkpoints_being_written(workdir):
  """Orbax's temporary directories: checkpoints started and not yet complete."""
  found = []
  for kind in ("latest", "best"):
    directory = os.path.join(workdir, "checkpoints", kind)
    if os.path.isdir(directory):
      found += [d for d in os.listdir(directory) if "tmp" in d]
  return found


def test_sigkill_during_checkpoint_writes_never_restores_wrong(trained_run, tmp_path):
  killed = str(tmp_path / "killed_while_saving")
  killed_mid_write = 0
  for _ in range(3):
    before = set(checkpoints_being_written(killed))  # leftovers of earlier kills
    process = start_run(killed, "--config.train.checkpoint_every_steps=1")
    deadline = time.time() + 300
    while not set(checkpoints_being_written(killed)) - before and time.time() < deadline:
      assert process.poll() is None, "the run ended before it could be killed"
      time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_mid_write += bool(set(checkpoints_being_written(killed)) - before)
  assert killed_mid_write >= 2, "too few kills landed inside a checkpoint write"
  assert max(finished_steps(killed)) < TOTAL_STEPS

  result = run_launch(killed, *OVERRIDES)
  assert "resumed" in result.stderr
  assert_same_final_state(trained_run[0], killed)
