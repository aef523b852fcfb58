"""Where device and process layouts part ways numerically, and how far training carries it.

  python benchmarks/layout_numerics.py                 # float32 and float64, 10 steps
  python benchmarks/layout_numerics.py --dtypes=float32 --steps=20

Runs the same things in three layouts of 4 data shards: 1 process x 4 devices (the
reference), 2 processes x 2 devices (jax.distributed, CPU collectives) and 1 process
x 1 device, from the same initial state and the same batches:

  allreduce      the sum over the 4 shards of fixed arrays (a cross-device reduction
                 alone), compared bit for bit, and against numpy's sums in the
                 orders ((a+b)+c)+d and (a+b)+(c+d);
  local_grads    each shard's gradient of the tests' tiny CNN (BatchNorm, batch 4)
                 computed on one device with no collective, compared bit for bit:
                 do the kernels themselves depend on the layout?
  trajectory     10 train steps of that CNN (batch 16, Adam, no dropout), the
                 largest relative L2 difference of any parameter, BatchNorm
                 statistic or Adam moment, after every step.

Prints one JSON object per dtype: {"bench": "layout_numerics", "dtype", ...}.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARDS = 4
BATCH = 16
IMAGE_SIZE = 32
LAYOUTS = {"1x4": (1, 4), "2x2": (2, 2), "1x1": (1, 1)}


def worker(spec: dict) -> None:
  """One process of one layout: writes what its local devices computed to spec['out']."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if spec["processes"] > 1:
    jax.distributed.initialize(spec["coordinator"], spec["processes"], spec["process_id"])
  if spec["dtype"] == "float64":
    jax.config.update("jax_enable_x64", True)
  from bloodcell_jax import models  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.training import optim, sharding, steps
  from configs import default  # pylint: disable=g-import-not-at-top

  dtype = np.dtype(spec["dtype"])
  mesh = sharding.make_mesh()
  process_rows = lambda a: np.split(a, jax.process_count())[jax.process_index()]
  local = lambda x: np.asarray(x.addressable_data(0))
  out = {}

  rows = np.random.default_rng(0).standard_normal((SHARDS, 8192)).astype(dtype)
  sharded = sharding.global_batch({"x": process_rows(rows)}, mesh)["x"]
  out["allreduce"] = local(jax.jit(lambda x: x.sum(0),
                                   out_shardings=sharding.replicated(mesh))(sharded))

  config = default.get_config()
  config.model.filters, config.model.dense_units = (8, 16, 16, 32), 32
  config.model.norm, config.model.dropout = "batch", 0.0
  config.model.dtype = config.model.param_dtype = spec["dtype"]
  model = models.build_model(config, 8)
  state, tx = steps.create_train_state(
      model, lambda p: optim.make_optimizer(config.optim, p, 10, 10)[0],
      jax.random.PRNGKey(0), IMAGE_SIZE, mesh)
  loss_config = steps.LossConfig(num_classes=8, l2=1e-3)
  rng = np.random.default_rng(1)
  batches = [{"image": rng.uniform(0, 255, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32),
              "label": rng.integers(0, 8, BATCH).astype(np.int32),
              "mask": np.ones(BATCH, np.float32)} for _ in range(spec["steps"])]

  # Each shard's gradient on one device with no collective: shard k of the first batch
  # on the process's devices in turn (all 4 of them on one device in the 1x1 layout).
  host_state = jax.tree.map(local, state)
  grad_fn = jax.jit(lambda s, b: steps._gradients(model, s, b, s.rng, loss_config)[0])  # pylint: disable=protected-access
  per_process = SHARDS // jax.process_count()
  for i in range(per_process):
    shard = jax.process_index() * per_process + i
    device = jax.local_devices()[i % jax.local_device_count()]
    part = {k: v[shard * BATCH // SHARDS:(shard + 1) * BATCH // SHARDS]
            for k, v in batches[0].items()}
    grads = grad_fn(jax.device_put(host_state, device), jax.device_put(part, device))
    out.update({f"local_grads/{shard}/{k}": v for k, v in flat(grads).items()})

  train_fn = steps.jit_train_step(mesh, model=model, tx=tx, learning_rate_fn=lambda s: 1e-3,
                                  loss_config=loss_config)
  for step, batch in enumerate(batches, 1):
    state, _ = train_fn(state, sharding.global_batch(
        {k: process_rows(v) for k, v in batch.items()}, mesh))
    out.update({f"trajectory/{step}/{k}": v for k, v in flat(jax.tree.map(local, {
        "params": state.params, "batch_stats": state.batch_stats,
        "opt_state": state.opt_state})).items()})
  np.savez(spec["out"], **out)


def flat(tree) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
          if np.asarray(leaf).dtype.kind == "f"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_layout(name: str, dtype: str, steps: int, directory: str) -> dict:
  """Runs one layout's processes; returns process 0's arrays merged with the others'."""
  processes, devices = LAYOUTS[name]
  env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
         "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                       f" --xla_force_host_platform_device_count={devices}").strip()}
  coordinator = f"localhost:{free_port()}"
  outs = [os.path.join(directory, f"{name}-{dtype}-{i}.npz") for i in range(processes)]
  running = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(
      {"processes": processes, "process_id": i, "coordinator": coordinator, "dtype": dtype,
       "steps": steps, "out": outs[i]})], cwd=ROOT, env=env) for i in range(processes)]
  if any(p.wait(timeout=600) for p in running):
    raise SystemExit(f"layout {name} failed")
  import numpy as np  # pylint: disable=g-import-not-at-top
  merged = {}
  for path in reversed(outs):  # process 0's replicated values win
    with np.load(path) as f:
      merged.update({k: f[k] for k in f.files})
  return merged


def relative(a, b) -> float:
  import numpy as np  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-300))


def compare(results: dict, dtype: str, steps: int) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  reference = results["1x4"]
  rows = np.random.default_rng(0).standard_normal((SHARDS, 8192)).astype(dtype)
  sums = {"((a+b)+c)+d": ((rows[0] + rows[1]) + rows[2]) + rows[3],
          "(a+b)+(c+d)": (rows[0] + rows[1]) + (rows[2] + rows[3])}
  report = {"bench": "layout_numerics", "dtype": dtype, "allreduce": {}, "local_grads": {},
            "trajectory": {}}
  for name, arrays in results.items():
    total = arrays["allreduce"]
    report["allreduce"][name] = {
        "bitwise_equal_to_1x4": bool(np.array_equal(total, reference["allreduce"])),
        **{f"matches {order}": float(np.mean(total == s)) for order, s in sums.items()}}
    if name == "1x4":
      continue
    grads = [k for k in arrays if k.startswith("local_grads/")]
    report["local_grads"][name] = {
        "bitwise_equal_to_1x4": all(np.array_equal(arrays[k], reference[k]) for k in grads),
        "largest_relative_difference": max(relative(reference[k], arrays[k]) for k in grads)}
    per_step = []
    for step in range(1, steps + 1):
      keys = [k for k in arrays if k.startswith(f"trajectory/{step}/")]
      worst = max(keys, key=lambda k: relative(reference[k], arrays[k]))
      per_step.append(relative(reference[worst], arrays[worst]))
    first = next((i + 1 for i, d in enumerate(per_step) if d), None)
    report["trajectory"][name] = {"first_step_that_differs": first,
                                  "largest_relative_difference_per_step":
                                      [float(f"{d:.3g}") for d in per_step],
                                  "worst_leaf_at_the_end": worst}
  return report


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dtypes", default="float32,float64")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(json.loads(args.worker))
  with tempfile.TemporaryDirectory() as directory:
    for dtype in args.dtypes.split(","):
      results = {name: run_layout(name, dtype, args.steps, directory) for name in LAYOUTS}
      print(json.dumps(compare(results, dtype, args.steps)), flush=True)


if __name__ == "__main__":
  main()
