"""The jitted, sharded train step gives the same result on 1 and on 4 devices."""

import json
import subprocess
import sys

import numpy as np

from conftest import ROOT, run_launch, subprocess_env

SCRIPT = r"""
import json, sys
import numpy as np
import jax
from bloodcell_jax import models, optim, sharding, steps
from configs import default

config = default.get_config()
config.model.filters = (4, 8, 8, 8)
config.model.dense_units = 8
config.model.norm = "batch"
config.model.dropout = 0.0
mesh = sharding.make_mesh()
model = models.build_model(config, 8)
state, tx = steps.create_train_state(
    model, lambda p: optim.make_optimizer(config.optim, p, 10, 10)[0],
    jax.random.PRNGKey(0), 32, mesh)
train_fn = steps.jit_train_step(mesh, model=model, tx=tx, learning_rate_fn=lambda s: 1e-3,
                                loss_config=steps.LossConfig(num_classes=8, l2=1e-3))
rng = np.random.default_rng(0)
for _ in range(3):
  batch = {"image": rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32),
           "label": rng.integers(0, 8, 8).astype(np.int32)}
  state, metrics = train_fn(state, sharding.global_batch(batch, mesh))
leaves = jax.tree.leaves({"params": state.params, "batch_stats": state.batch_stats})
print(json.dumps({"devices": jax.device_count(),
                  "leaves": [np.asarray(l).ravel().tolist() for l in leaves]}))
"""


def run_on(devices: int) -> dict:
  env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_four_devices_match_one_device_with_batch_norm():
  one, four = run_on(1), run_on(4)
  assert (one["devices"], four["devices"]) == (1, 4)
  for a, b in zip(one["leaves"], four["leaves"]):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_batch_not_divisible_by_the_device_count_is_a_user_error(tmp_path):
  result = run_launch(str(tmp_path / "run"), "--config.batch_size=18", check=False,
                      extra_env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.batch_size=18: must be divisible by the number of devices (4) and "
      "processes (1)")
