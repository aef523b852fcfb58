"""A run preempted (SIGTERM) and killed (SIGKILL, also in the middle of checkpoint writes),
and started again each time, ends bit-for-bit like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bloodcell_jax.training import run_files
from helpers import ROOT
from helpers.checkpoints import final_state, finished_steps
from helpers.runs import TINY_OVERRIDES, run_launch, subprocess_env
from helpers.runs import TRAINED_RUN_OVERRIDES as OVERRIDES

pytestmark = pytest.mark.e2e

TOTAL_STEPS = 12 * 18  # 288 training images in batches of 16


def start_run(workdir, *extra, log=os.devnull):
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/cnn.py",
          f"--workdir={workdir}", *TINY_OVERRIDES, *OVERRIDES, *extra]
  return subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=open(log, "w"))


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


def checkpoints_being_written(workdir):
  """Orbax's temporary directories: checkpoints started and not yet complete."""
  found = []
  for kind in ("latest", "best"):
    directory = os.path.join(workdir, run_files.CHECKPOINTS_DIR, kind)
    if os.path.isdir(directory):
      found += [d for d in os.listdir(directory) if "tmp" in d]
  return found


def kill_while_saving(workdir, log) -> bool:
  """Starts the run with a checkpoint every step and SIGKILLs it as soon as a checkpoint
  write begins; whether the kill landed inside the write."""
  before = set(checkpoints_being_written(workdir))  # leftovers of earlier kills
  process = start_run(workdir, "--config.train.checkpoint_every_steps=1", log=log)
  deadline = time.time() + 300
  while not set(checkpoints_being_written(workdir)) - before and time.time() < deadline:
    assert process.poll() is None, "the run ended before it could be killed"
    time.sleep(0.001)
  process.send_signal(signal.SIGKILL)
  process.wait()
  return bool(set(checkpoints_being_written(workdir)) - before)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
  """One run preempted (SIGTERM), then killed three times while saving, then finished:
  what each interruption left behind, and the logs."""
  workdir = str(tmp_path_factory.mktemp("interrupted"))
  logs = [os.path.join(workdir, f"run{i}.log") for i in range(4)]
  process = start_run(workdir, log=logs[0])
  wait_for_checkpoint(process, workdir, 24)
  second = run_launch(workdir, *OVERRIDES, check=False)  # while the first one trains
  process.send_signal(signal.SIGTERM)
  record = {"workdir": workdir, "sigterm_exit_code": process.wait(timeout=60),
            "first_pid": process.pid, "second_run": second,
            "sigterm_saved": max(finished_steps(workdir)),
            "results_after_sigterm": os.path.exists(os.path.join(workdir, run_files.RESULTS))}
  record["kills_inside_writes"] = sum(kill_while_saving(workdir, log) for log in logs[1:])
  record["saved_after_kills"] = max(finished_steps(workdir))
  record["after_sigterm_log"] = open(logs[1]).read()
  record["final_log"] = run_launch(workdir, *OVERRIDES).stderr
  return record


def test_sigterm_saves_exits_zero_and_the_next_run_resumes_there(interrupted):
  saved = interrupted["sigterm_saved"]
  assert interrupted["sigterm_exit_code"] == 0
  assert 24 <= saved < TOTAL_STEPS and not interrupted["results_after_sigterm"]
  assert f"at step {saved}" in interrupted["after_sigterm_log"]


def test_a_second_run_on_a_workdir_in_use_refuses_and_a_dead_runs_lock_is_taken_over(
    interrupted):
  second = interrupted["second_run"]
  assert second.returncode == 2
  assert second.stderr.strip().splitlines()[-1].startswith(
      f"error: --workdir={interrupted['workdir']}: in use by process "
      f"{interrupted['first_pid']} on ")
  # The runs killed with SIGKILL left their locks behind; the next run took each over.
  assert "which held the workdir, is gone; taking the lock over" in interrupted["final_log"]
  assert not os.path.exists(os.path.join(interrupted["workdir"], ".lock"))


def test_sigkill_during_checkpoint_writes_never_restores_wrong(trained_run, interrupted):
  assert interrupted["kills_inside_writes"] >= 2, "too few kills landed inside a checkpoint write"
  assert interrupted["saved_after_kills"] < TOTAL_STEPS
  assert "resumed" in interrupted["final_log"]
  # Preempted once and killed three times, it ends bit for bit like the uninterrupted run.
  assert_same_final_state(trained_run[0], interrupted["workdir"])
