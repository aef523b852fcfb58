"""Steady-state training throughput: bloodcell_jax against Keras 3 (JAX and TensorFlow backends).

  python benchmarks/train_step.py                    # every model x impl, one process each
  python benchmarks/train_step.py --model=cnn --impl=keras-jax --steps=30
  python benchmarks/train_step.py --model=efficientnetv2-s
  python benchmarks/train_step.py --model=convnext-small    # also mobilenetv3-small
  python benchmarks/train_step.py --model=cnn --devices=8   # sharded path against 1 device
  python benchmarks/train_step.py --model=cnn --batch=256 --grad_accum_steps=8

Prints one JSON object per line: {"bench": "train_step", "model", "impl", "batch",
"images_per_s", "step_ms_median", "peak_rss_mb", ...}. Every implementation runs
the same architecture (the model of configs/cnn.py, or a keras.applications
backbone with the study's head as in configs/effnet.py, every layer trainable)
on the same random batch, with Adam
and the same loss, in its own subprocess so that each one's peak memory is its
own and Keras's backend can be chosen. Run the whole set in one go: this
machine's speed drifts, so only ratios within one run mean much.

--devices=N times bloodcell_jax's step on 1 device and on N devices (forced host
devices on a CPU, which share its cores: what it measures there is the cost of
partitioning the step and of the collectives), with the same global batch, and
prints {"bench": "sharded_overhead", ...} with the per-step difference.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import step_setup

ROOT = step_setup.ROOT
CONFIGS = {"cnn": "configs/cnn.py", "efficientnetv2-s": "configs/effnet.py",
           "convnext-small": "configs/convnext_small_transfer.py",
           "mobilenetv3-small": "configs/mobilenetv3_transfer.py"}
MODELS = tuple(CONFIGS)
IMPLS = ("bloodcell_jax", "keras-jax", "keras-tensorflow")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=MODELS, default=None)
  parser.add_argument("--impl", choices=IMPLS, default=None)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--image_size", type=int, default=96)
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--config", default=None, help="recipe (default: the model's own)")
  parser.add_argument("--ld_preload", default="", help="e.g. a tcmalloc .so, for every impl")
  parser.add_argument("--devices", type=int, default=0,
                      help="compare 1 and N forced host devices (bloodcell_jax only)")
  parser.add_argument("--grad_accum_steps", type=int, default=1, help="bloodcell_jax only")
  parser.add_argument("--dtype", default="",
                      help="bloodcell_jax only: config.model.dtype (float32, bfloat16, auto); "
                           "default: the recipe's")
  return parser.parse_args(argv)


def time_steps(run_step, args):
  """Median seconds per step after warm-up; `run_step` must block until done."""
  for _ in range(args.warmup):
    run_step()
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - start)
  times.sort()
  return times[len(times) // 2]


def bench_bloodcell_jax(args, config):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from bloodcell_jax import models  # pylint: disable=g-import-not-at-top
  train_fn, state, batch = step_setup.jitted_step(config, args.batch, args.image_size,
                                                  args.grad_accum_steps)
  holder = [state]

  def run_step():
    holder[0], metrics = train_fn(holder[0], batch)
    jax.block_until_ready(metrics)
  return time_steps(run_step, args), {"devices": jax.device_count(),
                                      "platform": jax.devices()[0].platform,
                                      "grad_accum_steps": args.grad_accum_steps,
                                      "compute_dtype": np.dtype(
                                          models.build_model(config, 8).dtype).name}


def keras_cnn(config, args):
  """configs/cnn.py's architecture in Keras, layer for layer: (Conv, MaxPool, [BN], ReLU) x4,
  Flatten or global average pooling, Dropout, Dense, Dropout, Dense."""
  import keras  # pylint: disable=g-import-not-at-top
  m = config.model
  reg = keras.regularizers.L2(config.loss.l2) if config.loss.l2 else None
  inputs = keras.Input((args.image_size, args.image_size, 3))
  x = keras.layers.Rescaling(1.0 / 255)(inputs)
  for f in m.filters:
    x = keras.layers.Conv2D(f, 3, padding="same", use_bias=m.norm == "none",
                            kernel_regularizer=reg)(x)
    x = keras.layers.MaxPooling2D()(x)
    if m.norm == "batch":
      x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)(x)
    x = keras.layers.Activation(m.activation)(x)
  x = keras.layers.Flatten()(x) if m.head == "flatten" else keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(m.dropout)(x)
  x = keras.layers.Dense(m.dense_units, activation=m.activation, kernel_regularizer=reg)(x)
  x = keras.layers.Dropout(m.dropout)(x)
  outputs = keras.layers.Dense(8, kernel_regularizer=reg)(x)
  return keras.Model(inputs, outputs)


def keras_backbone(config, args):
  """The keras.applications base of the config's model with the study's head (as
  configs/effnet.py)."""
  import keras  # pylint: disable=g-import-not-at-top

  from bloodcell_jax import models  # pylint: disable=g-import-not-at-top
  m = config.model
  constructor = getattr(keras.applications, models.get_spec(m.name).keras.application)
  base = constructor(weights=None, include_top=False,
                     input_shape=(args.image_size, args.image_size, 3))
  x = keras.layers.Flatten()(base.output)
  x = keras.layers.Dropout(m.dropout)(x)
  x = keras.layers.Dense(m.dense_units, activation="relu")(x)
  x = keras.layers.Dropout(m.dropout)(x)
  return keras.Model(base.input, keras.layers.Dense(8)(x))


def bench_keras(args, config, backend):
  os.environ["KERAS_BACKEND"] = backend
  if backend == "jax":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the comparison is on the CPU
  import keras  # pylint: disable=g-import-not-at-top
  model = keras_cnn(config, args) if args.model == "cnn" else keras_backbone(config, args)
  model.compile(optimizer=keras.optimizers.Adam(config.optim.learning_rate),
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=config.loss.label_smoothing))
  images, labels = step_setup.random_batch(args.batch, args.image_size)

  targets = keras.utils.to_categorical(labels, 8)

  def run_step():
    model.train_on_batch(images, targets)  # returns host values: blocks until done
  return time_steps(run_step, args), {"jit_compile": str(model.jit_compile)}


def run_one(args):
  config = step_setup.load_config(args.config or os.path.join(ROOT, CONFIGS[args.model]))
  with config.unlocked():
    config.optim.freeze, config.optim.freeze_keras_layers = (), 0  # Keras trains every layer
    config.model.dtype = args.dtype or config.model.dtype
  if args.impl == "bloodcell_jax":
    seconds, extra = bench_bloodcell_jax(args, config)
  else:
    seconds, extra = bench_keras(args, config, args.impl.split("-", 1)[1])
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
  print(json.dumps({"bench": "train_step", "model": args.model, "impl": args.impl,
                    "batch": args.batch, "image_size": args.image_size,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "ld_preload": os.environ.get("LD_PRELOAD", ""),
                    "images_per_s": round(args.batch / seconds, 2),
                    "step_ms_median": round(1000 * seconds, 1),
                    "peak_rss_mb": round(peak_rss_mb, 1), **extra}), flush=True)


def run_subprocess(args, env) -> dict:
  """Runs one --model --impl measurement in its own process; returns its JSON record."""
  out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], check=True, env=env,
                       stdout=subprocess.PIPE, text=True).stdout
  print(out, end="", flush=True)
  return json.loads(out.strip().splitlines()[-1])


def compare_device_counts(args, passthrough):
  """bloodcell_jax's step on 1 and on `args.devices` devices, same global batch."""
  records = {}
  for devices in (1, args.devices):
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}
    records[devices] = run_subprocess([f"--model={args.model or 'cnn'}", "--impl=bloodcell_jax",
                                       *passthrough], env)
  one, many = records[1]["step_ms_median"], records[args.devices]["step_ms_median"]
  print(json.dumps({"bench": "sharded_overhead", "model": args.model or "cnn",
                    "batch": args.batch, "devices": records[args.devices]["devices"],
                    "step_ms_1_device": one, "step_ms_n_devices": many,
                    "overhead_ms": round(many - one, 1), "ratio": round(many / one, 3)}))


def main(argv=None):
  args = parse_args(argv)
  if args.model and args.impl:
    return run_one(args)
  passthrough = [a for a in (argv if argv is not None else sys.argv[1:])
                 if not a.startswith(("--model", "--impl", "--devices"))]
  if args.devices:
    return compare_device_counts(args, passthrough)
  for model in [args.model] if args.model else MODELS:
    for impl in [args.impl] if args.impl else IMPLS:
      env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
      if args.ld_preload:
        env["LD_PRELOAD"] = args.ld_preload
      if impl.startswith("keras"):
        env["BLOODCELL_JAX_KEEP_XLA_FLAGS"] = "1"  # Keras runs as its users run it
      subprocess.run([sys.executable, os.path.abspath(__file__), f"--model={model}",
                      f"--impl={impl}", *passthrough], check=True, env=env)


if __name__ == "__main__":
  main()
