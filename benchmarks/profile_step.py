"""Where a train step's time goes: traces a few steps with jax.profiler and sums time per XLA op.

  python benchmarks/profile_step.py [--config=configs/cnn.py] [--steps=3] [--top=15] [--by_kind]
      [--all_trainable]   # a transfer recipe's model with every layer training

Prints one JSON object per line, heaviest first: {"bench": "profile", "op": ...,
"ms_per_step": ...} (with --by_kind, ops are summed by kind: the name without
its number, e.g. all `transpose_copy_fusion.N`), then {"op": "step", ...} with
the wall time of a step. Op
names are XLA's (fusions, convolutions); `XLA_FLAGS=--xla_dump_to=DIR` maps them
back to HLO. The full trace stays in --trace_dir for TensorBoard / Perfetto.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

import step_setup

# Host-side bookkeeping that the trace also records; not XLA work.
_NOT_OPS = ("ThunkExecutor", "block_until_ready", "$", "SlinkyThreadPool")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(step_setup.ROOT, "configs", "cnn.py"))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--trace_dir", default=None)
  parser.add_argument("--by_kind", action="store_true", help="sum ops by kind")
  parser.add_argument("--all_trainable", action="store_true", help="ignore the recipe's freezing")
  args = parser.parse_args(argv)

  config = step_setup.load_config(args.config)
  if args.all_trainable:
    config.optim.freeze, config.optim.freeze_keras_layers = (), 0
  import jax  # pylint: disable=g-import-not-at-top
  train_fn, state, batch = step_setup.jitted_step(config, args.batch, config.image_size)
  for _ in range(2):  # compile and warm up
    state, metrics = train_fn(state, batch)
  jax.block_until_ready(metrics)

  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="bloodcell_profile_")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(args.steps):
      state, metrics = train_fn(state, batch)
      jax.block_until_ready(metrics)
  step_ms = 1000 * (time.perf_counter() - start) / args.steps

  trace_file = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(trace_file) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  per_op = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not event["name"].startswith(_NOT_OPS):
      name = event["name"].rsplit(".", 1)[0] if args.by_kind else event["name"]
      per_op[name] += event.get("dur", 0) / 1000 / args.steps
  for op, ms in per_op.most_common(args.top):
    print(json.dumps({"bench": "profile", "op": op, "ms_per_step": round(ms, 2)}))
  print(json.dumps({"bench": "profile", "op": "step", "ms_per_step": round(step_ms, 1),
                    "traced_ops_ms": round(sum(per_op.values()), 1),
                    "xla_flags": os.environ.get("XLA_FLAGS", ""), "trace_dir": trace_dir}))


if __name__ == "__main__":
  main()
