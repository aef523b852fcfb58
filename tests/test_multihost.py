"""Several processes under jax.distributed (CPU collectives), and checkpoints that move
between topologies: 2 processes x 2 devices train like 1 process x 4 devices, a run
saved on 4 devices continues on 1 device and on 2 processes, and SIGTERM on one process
makes all of them save the same step and exit 0.

Float sums in another order differ in the last bits, and training amplifies such
differences quickly in a small CNN (an Adam step turns a sign into a full step, a max
pool's tie goes one way or the other), so these runs are short: 10 steps, no dropout,
no augmentation. 4 devices in one process or in two agree to 1e-5 there (1e-4
asserted). On one CPU device the last bits of a step also depend on things outside
the program (importing TensorFlow earlier, or calling the step through a Python
wrapper, changed them in our runs), and those runs drift by a few percent in 10 steps;
the 1-device continuation is held to 5%, which a restart from scratch or from another
data position exceeds (tests/test_sharding.py holds the step itself to 2e-5 on 1 and
on 8 devices)."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, TINY_OVERRIDES, subprocess_env
from test_resume import final_state, finished_steps

EPOCHS = 2
STEPS_PER_EPOCH = 5  # 72 training images in batches of 16
# A constant learning rate, so that a run stopped after fewer epochs continues exactly.
OVERRIDES = ("--config.data.synthetic_size=80", "--config.train.early_stopping_patience=0",
             "--config.model.norm=batch", "--config.model.dropout=0.0",
             "--config.augment.train=", "--config.optim.schedule=constant")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(workdir, processes: int, devices_per_process: int, epochs: int = EPOCHS, *extra):
  """Starts `processes` launch.py processes on one coordinator; returns the Popen list."""
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/cnn.py",
          f"--workdir={workdir}", *TINY_OVERRIDES, *OVERRIDES, f"--config.num_epochs={epochs}",
          *extra]
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
  if processes > 1:
    args.append(f"--coordinator_address=localhost:{free_port()}")
    args.append(f"--num_processes={processes}")
  os.makedirs(workdir, exist_ok=True)
  return [subprocess.Popen(args + ([f"--process_id={i}"] if processes > 1 else []), cwd=ROOT,
                           env=env, stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(workdir, f"process{i}.log"), "a"))
          for i in range(processes)]


def finish(workdir, processes, timeout=300):
  """Waits for every process; returns their logs. A failure shows process 0's log tail."""
  codes = [p.wait(timeout=timeout) for p in processes]
  logs = [open(os.path.join(workdir, f"process{i}.log")).read() for i in range(len(processes))]
  assert codes == [0] * len(codes), f"exit codes {codes}:\n{logs[0][-3000:]}"
  return logs


def train(workdir, processes, devices_per_process, epochs=EPOCHS):
  return finish(workdir, start(workdir, processes, devices_per_process, epochs))


def assert_same_state(workdir_a, workdir_b, tolerance=1e-4):
  """The final train states agree: every parameter, BatchNorm statistic and optimizer
  moment to `tolerance` in relative L2 norm, and the step and RNG exactly."""
  step_a, state_a = final_state(workdir_a)
  step_b, state_b = final_state(workdir_b)
  assert step_a == step_b == EPOCHS * STEPS_PER_EPOCH
  flat_a, flat_b = flatten(state_a), flatten(state_b)
  assert flat_a.keys() == flat_b.keys()
  largest = 0.0
  for key in flat_a:
    a, b = flat_a[key], flat_b[key]
    if a.dtype.kind != "f":
      np.testing.assert_array_equal(a, b, err_msg=key)
      continue
    difference = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)
    assert difference <= tolerance, f"{key}: relative difference {difference:.2e}"
    largest = max(largest, difference)
  print(f"{workdir_b}: largest relative difference {largest:.2e}")


def flatten(tree) -> dict:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("four_devices"))
  train(workdir, processes=1, devices_per_process=4)
  return workdir


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("two_processes"))
  return workdir, train(workdir, processes=2, devices_per_process=2)


def test_two_processes_train_like_one_process_with_four_devices(four_devices, two_processes):
  workdir, logs = two_processes
  assert "process 0 of 2, 2 local / 4 global devices" in logs[0]
  assert_same_state(four_devices, workdir)


def test_only_process_zero_writes_logs_and_summaries(four_devices, two_processes):
  workdir, logs = two_processes
  assert f"step {EPOCHS * STEPS_PER_EPOCH}/" in logs[0]
  assert "step " not in logs[1] and "results:" not in logs[1]
  for name in ("metrics.jsonl", "results.json", "config.json"):
    assert os.path.isfile(os.path.join(workdir, name))
  records = lambda w: open(os.path.join(w, "metrics.jsonl")).read().splitlines()
  assert len(records(workdir)) == len(records(four_devices))  # one writer, not two
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))) == 1


def test_checkpoint_from_four_devices_continues_on_one_device_and_on_two_processes(
    four_devices, tmp_path):
  half = EPOCHS // 2 * STEPS_PER_EPOCH
  for processes, devices, tolerance in ((2, 2, 1e-4), (1, 1, 0.05)):
    continued = str(tmp_path / f"continued_{processes}x{devices}")
    shutil.copytree(four_devices, continued)
    os.remove(os.path.join(continued, "results.json"))
    for later in glob.glob(os.path.join(continued, "checkpoints", "*", "*")):
      if os.path.basename(later).isdigit() and int(os.path.basename(later)) > half:  # back to the mid-run checkpoint
        shutil.rmtree(later)
    assert max(finished_steps(continued)) == half
    logs = train(continued, processes, devices)
    assert f"at step {half} (epoch {EPOCHS // 2})" in logs[0]
    assert_same_state(four_devices, continued, tolerance)


def test_sigterm_on_one_process_saves_the_same_step_on_all_and_resumes(four_devices, tmp_path):
  preempted = str(tmp_path / "preempted")
  # A checkpoint every step slows the run down enough to stop it half-way.
  processes = start(preempted, 2, 2, EPOCHS, "--config.train.checkpoint_every_steps=1")
  deadline = time.time() + 300
  while not finished_steps(preempted) and time.time() < deadline:
    assert all(p.poll() is None for p in processes), "the run ended before it could be stopped"
    time.sleep(0.02)
  processes[1].send_signal(signal.SIGTERM)  # only one of them, as a scheduler might
  logs = finish(preempted, processes, timeout=120)
  saved = max(finished_steps(preempted))
  assert saved < EPOCHS * STEPS_PER_EPOCH, "stopped too late to test resuming"
  assert f"SIGTERM: saved step {saved}" in logs[0] and f"saved step {saved}" in logs[1]
  assert not os.path.exists(os.path.join(preempted, "results.json"))

  logs = train(preempted, processes=2, devices_per_process=2)
  assert f"at step {saved}" in logs[0]
  assert_same_state(four_devices, preempted)
