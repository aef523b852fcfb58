"""Several processes under jax.distributed (CPU collectives), and checkpoints that move
between topologies: 2 processes x 2 devices train like 1 process x 4 devices (also when
SIGTERM on one process stops them half-way and they resume), and a run saved on 4
devices continues on 1 device and on 2 processes.

These runs train in float64. In float32 the layouts differ in the last bits of two
reductions (benchmarks/layout_numerics.py shows both): the CPU collectives sum the
shards of a cross-process all-reduce in another order than one process sums its
devices, and a convolution's weight gradient splits its sum by the number of devices
in the process. Training a small CNN amplifies such bits by a factor that depends on
the CPU: after these 10 steps, 1e-5 on an AMD EPYC but 8e-4 on an Intel Xeon (3e-2
for the continuation), so no float32 tolerance is both safe and tight. In float64 the
same rounding starts 1e9 times smaller: the layouts agree to 1e-14, the 1-device
continuation to 1e-13 (largest relative difference of any parameter, statistic or
Adam moment, AMD EPYC), and TOLERANCE leaves four orders of magnitude for another
CPU. Broken on purpose, every process reading the same slice of each batch moved the
2-process run by 1e-1, and per-device BatchNorm statistics the 1-device continuation
by 5e-3: far outside it."""

import glob
import json
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

from bloodcell_jax.training import run_files
from helpers import ROOT
from helpers.checkpoints import final_state, finished_steps
from helpers.runs import TINY_OVERRIDES, subprocess_env

pytestmark = pytest.mark.e2e

EPOCHS = 2
STEPS_PER_EPOCH = 5  # 72 training images in batches of 16
TOLERANCE = 1e-9  # relative L2 difference, float64 (see above)
# A constant learning rate, so that a run stopped after fewer epochs continues exactly.
OVERRIDES = ("--config.data.synthetic_size=80", "--config.train.early_stopping_patience=0",
             "--config.model.norm=batch", "--config.model.dropout=0.0",
             "--config.augment.train=", "--config.optim.schedule=constant",
             "--config.model.dtype=float64", "--config.model.param_dtype=float64")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(workdir, processes: int, devices_per_process: int, *extra):
  """Starts `processes` launch.py processes on one coordinator; returns the Popen list."""
  args = [sys.executable, os.path.join(ROOT, "launch.py"), "--config=configs/cnn.py",
          f"--workdir={workdir}", *TINY_OVERRIDES, *OVERRIDES, f"--config.num_epochs={EPOCHS}",
          *extra]
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
                       JAX_ENABLE_X64="1")
  if processes > 1:
    args.append(f"--coordinator_address=localhost:{free_port()}")
    args.append(f"--num_processes={processes}")
  os.makedirs(workdir, exist_ok=True)
  return [subprocess.Popen(args + ([f"--process_id={i}"] if processes > 1 else []), cwd=ROOT,
                           env=env, stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(workdir, f"process{i}.log"), "w"))
          for i in range(processes)]


def finish(workdir, processes, timeout=300):
  """Waits for every process; returns their logs. A failure shows process 0's log tail."""
  codes = [p.wait(timeout=timeout) for p in processes]
  logs = [open(os.path.join(workdir, f"process{i}.log")).read() for i in range(len(processes))]
  assert codes == [0] * len(codes), f"exit codes {codes}:\n{logs[0][-3000:]}"
  return logs


def train(workdir, processes, devices_per_process):
  return finish(workdir, start(workdir, processes, devices_per_process))


def assert_same_state(workdir_a, workdir_b, tolerance=TOLERANCE):
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
    assert a.dtype == np.float64, f"{key}: {a.dtype}, not a float64 run"
    difference = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-300)
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
  """2 processes x 2 devices, stopped half-way by SIGTERM to one of them, then resumed:
  (workdir, logs of the stopped run, logs of the resumed run, the step saved)."""
  workdir = str(tmp_path_factory.mktemp("two_processes"))
  # A checkpoint every step slows the run down enough to stop it half-way.
  processes = start(workdir, 2, 2, "--config.train.checkpoint_every_steps=1")
  deadline = time.time() + 300
  while not finished_steps(workdir) and time.time() < deadline:
    assert all(p.poll() is None for p in processes), "the run ended before it could be stopped"
    time.sleep(0.02)
  processes[1].send_signal(signal.SIGTERM)  # only one of them, as a scheduler might
  stopped = finish(workdir, processes, timeout=120)
  saved = max(finished_steps(workdir))
  return workdir, stopped, train(workdir, 2, 2), saved


def test_sigterm_on_one_process_saves_the_same_step_on_all_and_resumes(two_processes):
  workdir, stopped, resumed, saved = two_processes
  assert saved < EPOCHS * STEPS_PER_EPOCH, "stopped too late to test resuming"
  assert f"SIGTERM: saved step {saved}" in stopped[0] and f"saved step {saved}" in stopped[1]
  assert "results:" not in stopped[0]
  assert f"at step {saved}" in resumed[0] and "results:" in resumed[0]


def test_two_processes_train_like_one_process_with_four_devices(four_devices, two_processes):
  workdir, stopped, _, _ = two_processes
  assert "process 0 of 2, 2 local / 4 global devices" in stopped[0]
  assert_same_state(four_devices, workdir)


def test_only_process_zero_writes_logs_and_summaries(four_devices, two_processes):
  workdir, _, resumed, _ = two_processes
  assert f"step {EPOCHS * STEPS_PER_EPOCH}/" in resumed[0]
  assert "step " not in resumed[1] and "results:" not in resumed[1]
  for name in (run_files.METRICS, run_files.RESULTS, run_files.CONFIG):
    assert os.path.isfile(os.path.join(workdir, name))
  assert logged_metrics(workdir) == logged_metrics(four_devices)  # one writer, not two
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))) == 2


def logged_metrics(workdir) -> list:
  """(step, names) of every training and validation record in metrics.jsonl, in order (the
  progress records' rates and times depend on when a run was stopped)."""
  records = [json.loads(line) for line in open(os.path.join(workdir, run_files.METRICS))]
  return [(r["step"], sorted(r)) for r in records
          if any(k.startswith(("train_", "val_")) for k in r)]


def test_checkpoint_from_four_devices_continues_on_one_device_and_on_two_processes(
    four_devices, tmp_path):
  half = EPOCHS // 2 * STEPS_PER_EPOCH
  for processes, devices in ((2, 2), (1, 1)):
    continued = str(tmp_path / f"continued_{processes}x{devices}")
    shutil.copytree(four_devices, continued)
    os.remove(os.path.join(continued, run_files.RESULTS))
    # Back to the mid-run checkpoint.
    for later in glob.glob(os.path.join(continued, run_files.CHECKPOINTS_DIR, "*", "*")):
      if os.path.basename(later).isdigit() and int(os.path.basename(later)) > half:
        shutil.rmtree(later)
    assert max(finished_steps(continued)) == half
    logs = train(continued, processes, devices)
    assert f"at step {half} (epoch {EPOCHS // 2})" in logs[0]
    assert_same_state(four_devices, continued)
