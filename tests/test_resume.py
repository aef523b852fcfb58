"""A run killed (SIGKILL) or preempted (SIGTERM) and started again ends bit-for-bit like an
uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, TINY_OVERRIDES, run_launch, subprocess_env

OVERRIDES = ("--config.num_epochs=12", "--config.train.checkpoint_every_steps=3",
             "--config.train.early_stopping_patience=0",
             "--config.model.norm=batch")  # batch_stats must survive the restart too
TOTAL_STEPS = 12 * 18  # 288 training images in batches of 16


def final_state(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints", "latest"),
                                  item_names=("state", "meta"))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, restored["state"]


def finished_steps(workdir):
  directory = os.path.join(workdir, "checkpoints", "latest")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def start_run(workdir):
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/cnn.py",
          f"--workdir={workdir}", *TINY_OVERRIDES, *OVERRIDES]
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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  run_launch(workdir, *OVERRIDES)
  return workdir


def test_sigkill_and_restart_equals_uninterrupted(uninterrupted, tmp_path):
  killed = str(tmp_path / "killed")
  process = start_run(killed)
  wait_for_checkpoint(process, killed, 24)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert max(finished_steps(killed)) < TOTAL_STEPS, "killed too late to test resuming"
  assert not os.path.exists(os.path.join(killed, "results.json"))

  result = run_launch(killed, *OVERRIDES)
  assert "resumed" in result.stderr
  assert_same_final_state(uninterrupted, killed)


def test_sigterm_saves_exits_zero_and_resumes_exactly(uninterrupted, tmp_path):
  preempted = str(tmp_path / "preempted")
  process = start_run(preempted)
  wait_for_checkpoint(process, preempted, 24)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=60) == 0
  saved = max(finished_steps(preempted))
  assert saved < TOTAL_STEPS and not os.path.exists(os.path.join(preempted, "results.json"))

  result = run_launch(preempted, *OVERRIDES)
  assert f"at step {saved}" in result.stderr
  assert_same_final_state(uninterrupted, preempted)
