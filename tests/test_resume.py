"""A run killed with SIGKILL and started again ends bit-for-bit like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import jax

from conftest import ROOT, TINY_OVERRIDES, run_launch, subprocess_env

OVERRIDES = ("--config.num_epochs=12", "--config.train.checkpoint_every_steps=3",
             "--config.train.early_stopping_patience=0",
             "--config.model.norm=batch")  # batch_stats must survive the restart too


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


def test_sigkill_and_restart_equals_uninterrupted(tmp_path):
  straight = str(tmp_path / "straight")
  run_launch(straight, *OVERRIDES)

  killed = str(tmp_path / "killed")
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/cnn.py",
          f"--workdir={killed}", *TINY_OVERRIDES, *OVERRIDES]
  process = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and not [s for s in finished_steps(killed) if s >= 24]:
    assert process.poll() is None, "the run ended before it could be killed"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  killed_at = max(finished_steps(killed))
  total_steps = 12 * 18
  assert killed_at < total_steps, "killed too late to test resuming"
  assert not os.path.exists(os.path.join(killed, "results.json"))

  result = run_launch(killed, *OVERRIDES)
  assert "resumed" in result.stderr

  step_a, state_a = final_state(straight)
  step_b, state_b = final_state(killed)
  assert step_a == step_b == total_steps
  leaves_a, tree_a = jax.tree.flatten(state_a)
  leaves_b, tree_b = jax.tree.flatten(state_b)
  assert tree_a == tree_b
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
