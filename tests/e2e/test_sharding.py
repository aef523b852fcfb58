"""The jitted train step on 8 devices equals the step on 1 device; gradient accumulation
equals the whole batch; the weight average is the average it claims to be.

In float64, so that the comparisons hold on any CPU: in float32 the layouts differ in
the last bits of their reductions, by amounts that depend on the CPU (see
tests/e2e/test_multihost.py). In float64 they agree to 1e-13 after 3 steps; RTOL leaves
four orders of magnitude for another CPU, and one example per device with
unsynchronised BatchNorm statistics moves them by more than 1e-2."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT
from helpers.runs import run_launch, subprocess_env

pytestmark = pytest.mark.e2e

# Trains a tiny CNN for 3 steps per variant on however many devices XLA_FLAGS gives,
# from the same initial state and batches; prints every variant's final variables.
SCRIPT = r"""
import json, sys
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from bloodcell_jax import models
from bloodcell_jax.training import optim, sharding, steps
from configs import default

def run(norm, batch_size, accum=1, ema_decay=0.0):
  config = default.get_config()
  config.model.filters = (4, 8, 8, 8)
  config.model.dense_units = 8
  config.model.norm = norm
  config.model.dropout = 0.0
  config.model.dtype = config.model.param_dtype = "float64"
  mesh = sharding.make_mesh()
  model = models.build_model(config, 8)
  state, tx = steps.create_train_state(
      model, lambda p: optim.make_optimizer(config.optim, p, 10, 10)[0],
      jax.random.PRNGKey(0), 32, mesh, ema=ema_decay > 0)
  train_fn = steps.jit_train_step(mesh, model=model, tx=tx, learning_rate_fn=lambda s: 1e-3,
                                  loss_config=steps.LossConfig(num_classes=8, l2=1e-3),
                                  grad_accum_steps=accum, ema_decay=ema_decay)
  rng = np.random.default_rng(0)
  initial = flat({"params": state.params, "batch_stats": state.batch_stats})
  trajectory = []
  for _ in range(3):
    batch = {"image": rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 8, batch_size).astype(np.int32),
             "mask": np.ones(batch_size, np.float32)}
    state, metrics = train_fn(state, sharding.global_batch(batch, mesh))
    trajectory.append(flat({"params": state.params, "batch_stats": state.batch_stats}))
  return {"initial": initial, "final": trajectory[-1], "trajectory": trajectory,
          "batch_stats": flat(state.batch_stats), "ema": flat(state.ema) if state.ema else None}

def flat(tree):
  return [np.asarray(leaf).ravel().tolist() for leaf in jax.tree.leaves(tree)]

variants = json.loads(sys.argv[1])
print(json.dumps({"devices": jax.device_count(),
                  **{name: run(**kwargs) for name, kwargs in variants.items()}}))
"""

def run_on(devices: int, **variants) -> dict:
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(variants)], cwd=ROOT, env=env,
                       check=True, capture_output=True, text=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result["devices"] == devices
  return result


RTOL = 1e-10


def assert_close(a, b, rtol=RTOL, atol=RTOL / 10):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def assert_differs(a, b):
  assert any(not np.allclose(x, y, rtol=1e-3, atol=1e-4) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def one_device():
  # The weight average does not change the weights' trajectory: one variant checks both.
  return run_on(1, batch_norm=dict(norm="batch", batch_size=8, ema_decay=0.9),
                batch_norm_accumulated=dict(norm="batch", batch_size=8, accum=4),
                whole=dict(norm="none", batch_size=16),
                accumulated=dict(norm="none", batch_size=16, accum=4))


@pytest.fixture(scope="module")
def eight_devices():
  return run_on(8, batch_norm=dict(norm="batch", batch_size=8),
                accumulated=dict(norm="none", batch_size=16, accum=2))


def test_eight_devices_match_one_device_with_batch_norm(one_device, eight_devices):
  # One example per device: per-device BatchNorm statistics would be far off.
  assert_close(one_device["batch_norm"]["final"], eight_devices["batch_norm"]["final"])


def test_gradient_accumulation_matches_the_whole_batch(one_device, eight_devices):
  whole = one_device["whole"]["final"]
  assert_differs(whole, one_device["whole"]["trajectory"][0])  # it trained
  assert_close(whole, one_device["accumulated"]["final"])
  assert_close(whole, eight_devices["accumulated"]["final"])


def test_accumulation_averages_batch_norm_running_means(one_device):
  # After one step from the same state, the first BatchNorm layer's running mean is the
  # whole batch's (deeper layers see inputs normalised by micro-batch statistics).
  # Leaves are in key order: batch_stats before params, each layer's mean before its var.
  whole = one_device["batch_norm"]
  accumulated = one_device["batch_norm_accumulated"]
  assert accumulated["batch_stats"], "no BatchNorm statistics"
  first_step = lambda run: run["trajectory"][0][:len(run["batch_stats"])]
  means_whole, means_accumulated = first_step(whole)[::2], first_step(accumulated)[::2]
  assert_differs(means_whole, [np.zeros(len(m)) for m in means_whole])
  assert_close(means_whole[:1], means_accumulated[:1])


def test_ema_is_the_warmed_up_average_of_the_trajectory(one_device):
  run = one_device["batch_norm"]
  average = [np.asarray(leaf) for leaf in run["initial"]]
  for t, weights in enumerate(run["trajectory"]):
    decay = min(0.9, (1 + t) / (10 + t))
    average = [decay * a + (1 - decay) * np.asarray(w) for a, w in zip(average, weights)]
  assert_close(run["ema"], average)
  assert_differs(run["ema"], run["final"])


def test_batch_not_divisible_by_the_device_count_is_a_user_error(tmp_path):
  result = run_launch(str(tmp_path / "run"), "--config.batch_size=18", check=False,
                      extra_env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.batch_size=18: must be divisible by the number of devices (4) and "
      "processes (1)")
