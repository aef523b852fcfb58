"""EfficientNetV2-S on one accelerator, without TensorFlow: train-step speed against timm, and
a from-scratch training run fed from memory.

  python benchmarks/gpu_effnet.py --data=DIR [--train_seconds=300] [--skip_timm]

1. Train-step throughput of configs/effnet.py's EfficientNetV2-S (bfloat16
   compute, float32 parameters, Adam, batch 256, 96x96, device-resident batch),
   with Keras's GAP classifier so that it matches timm's, against PyTorch timm's
   `tf_efficientnetv2_s` (torch.compile, bfloat16 autocast, channels_last,
   Adam), plus ours at batch 32 for the per-step overhead.
2. configs/effnet.py (the study's Flatten head) trained from scratch on the
   ImageFolder DIR for about --train_seconds: the whole training set stays on
   the device, batches are gathered and flipped/rotated there, and the project's
   own train and eval steps run on them; validation each epoch.

Prints one JSON object per line ("bench": "gpu_train_step" | "gpu_train").
"""

import argparse
import json
import os
import sys
import time

# JAX and PyTorch share the GPU here: JAX must not take 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import step_setup  # pylint: disable=wrong-import-position  (puts the project on sys.path)

ROOT = step_setup.ROOT


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "pbc96"))
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--small_batch", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=96)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--train_seconds", type=float, default=180)
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--skip_timm", action="store_true")
  parser.add_argument("--skip_train", action="store_true")
  return parser.parse_args(argv)


def emit(**record):
  print(json.dumps(record), flush=True)


def effnet_config(dtype="bfloat16", head="flatten"):
  config = step_setup.load_config(os.path.join(ROOT, "configs", "effnet.py"))
  with config.unlocked():
    config.model.dtype = dtype
    config.model.head = head
  return config


def median_step_seconds(run_step, warmup, steps):
  for _ in range(warmup):
    run_step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run_step()
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def bench_ours(args, batch):
  import jax  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  train_fn, state, device_batch = step_setup.jitted_step(effnet_config(head="keras"), batch,
                                                         args.image_size)
  holder = [state]

  def run_step():
    holder[0], metrics = train_fn(holder[0], device_batch)
    jax.block_until_ready(metrics)
  run_step()
  compile_s = time.perf_counter() - started
  seconds = median_step_seconds(run_step, args.warmup, args.steps)
  emit(bench="gpu_train_step", impl="bloodcell_jax", model="efficientnetv2-s", batch=batch,
       dtype="bfloat16", images_per_s=round(batch / seconds, 1),
       step_ms_median=round(1000 * seconds, 2), first_step_s=round(compile_s, 1),
       device=str(jax.devices()[0].device_kind), jax=jax.__version__)
  return batch / seconds


def bench_timm(args):
  import timm  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = timm.create_model("tf_efficientnetv2_s", pretrained=False, num_classes=8)
  model = model.to(device).to(memory_format=torch.channels_last)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  compiled = torch.compile(model)
  images = torch.rand(args.batch, 3, args.image_size, args.image_size, device=device)
  images = images.contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, 8, (args.batch,), device=device)

  def run_step():
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
      loss = torch.nn.functional.cross_entropy(compiled(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if device == "cuda":
      torch.cuda.synchronize()
  started = time.perf_counter()
  run_step()
  compile_s = time.perf_counter() - started
  seconds = median_step_seconds(run_step, args.warmup, args.steps)
  emit(bench="gpu_train_step", impl="timm", model="tf_efficientnetv2_s", batch=args.batch,
       dtype="bfloat16", images_per_s=round(args.batch / seconds, 1),
       step_ms_median=round(1000 * seconds, 2), first_step_s=round(compile_s, 1),
       torch=torch.__version__, timm=timm.__version__)


def train_from_scratch(args, step_images_per_s: float):
  """configs/effnet.py from scratch for about --train_seconds (the epoch count comes from the
  measured step speed, so that the learning-rate schedule spans the run); prints JSON."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.data import splits  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.evaluation.classification import summarize_confusion  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.training import model_and_optimizer, optim, sharding, steps  # pylint: disable=g-import-not-at-top

  config = effnet_config()
  with config.unlocked():
    config.data.train = args.data
    config.batch_size = args.batch
    config.optim.learning_rate = args.learning_rate
    config.optim.schedule = "warmup_cosine"
    config.loss.label_smoothing = 0.1
  started = time.perf_counter()
  data = splits.load_splits(config.data, args.image_size, config.data.split_seed)
  read_s = time.perf_counter() - started
  num_classes = len(data.class_names)
  steps_per_epoch = len(data.train) // args.batch  # whole batches; the rest reshuffles in
  # 80% of the step speed: gathering, augmenting and validating take the rest.
  epochs = max(1, int(0.8 * args.train_seconds * step_images_per_s / len(data.train)))
  mesh = sharding.make_mesh()
  train_images = jax.device_put(data.train.images)
  train_labels = jax.device_put(data.train.labels.astype(np.int32))

  @jax.jit
  def gather_augment(indices, key):
    """A batch from the device-resident set: flips and 90-degree turns per image."""
    images = train_images[indices].astype(jnp.float32)
    flip_h, flip_v, turn = jax.random.bernoulli(key, 0.5, (3, indices.shape[0], 1, 1, 1))
    images = jnp.where(flip_h, images[:, :, ::-1], images)
    images = jnp.where(flip_v, images[:, ::-1], images)
    images = jnp.where(turn, jnp.swapaxes(images, 1, 2), images)
    return {"image": images, "label": train_labels[indices]}

  def run(epochs):
    total_steps = epochs * steps_per_epoch
    model, tx_factory, _ = model_and_optimizer.build(
        config, num_classes, steps_per_epoch, total_steps)
    state, tx = steps.create_train_state(model, tx_factory, jax.random.PRNGKey(0),
                                         args.image_size, mesh)
    train_fn = steps.jit_train_step(
        mesh, model=model, tx=tx,
        learning_rate_fn=optim.learning_rate_schedule(config.optim, steps_per_epoch, total_steps),
        loss_config=steps.LossConfig(
            num_classes=num_classes, label_smoothing=config.loss.label_smoothing,
            class_weights=splits.balanced_class_weights(data.train.labels, num_classes)))
    eval_fn = steps.jit_eval_step(mesh, model=model)
    return state, train_fn, eval_fn

  def evaluate(state, eval_fn):
    total, eval_batch = None, 512
    for start in range(0, len(data.val), eval_batch):
      images = data.val.images[start:start + eval_batch]
      labels = data.val.labels[start:start + eval_batch]
      pad = eval_batch - len(labels)
      batch = {"image": np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))).astype(np.float32),
               "label": np.pad(labels, (0, pad)).astype(np.int32),
               "mask": np.pad(np.ones(len(labels), bool), (0, pad))}
      metrics = eval_fn(state, sharding.global_batch(batch, mesh))
      total = metrics if total is None else total.merge(metrics)
    confusion = np.asarray(total.compute()["confusion"])
    return summarize_confusion(confusion, data.class_names, "val")

  state, train_fn, eval_fn = run(epochs)
  rng = np.random.default_rng(0)
  key = jax.random.PRNGKey(0)

  def one_epoch(state, epoch):
    order = rng.permutation(len(data.train))
    for i in range(steps_per_epoch):
      indices = jnp.asarray(order[i * args.batch:(i + 1) * args.batch])
      batch = gather_augment(indices, jax.random.fold_in(key, epoch * steps_per_epoch + i))
      state, metrics = train_fn(state, batch)
    jax.block_until_ready(state.params)
    return state, metrics

  history, train_s, first_epoch_s = [], 0.0, 0.0
  for epoch in range(epochs):
    epoch_started = time.perf_counter()
    state, metrics = one_epoch(state, epoch)
    epoch_s = time.perf_counter() - epoch_started
    first_epoch_s = epoch_s if epoch == 0 else first_epoch_s
    train_s += epoch_s
    summary = evaluate(state, eval_fn)
    history.append(round(summary["val_accuracy"], 4))
  loss = float(metrics.compute()["loss"])
  emit(bench="gpu_train", model="efficientnetv2-s", config="configs/effnet.py", head="flatten",
       init="scratch", dtype="bfloat16", batch=args.batch, epochs=epochs,
       steps=epochs * steps_per_epoch, learning_rate=args.learning_rate,
       schedule="warmup_cosine", num_train=len(data.train), num_val=len(data.val),
       read_s=round(read_s, 1), first_epoch_s=round(first_epoch_s, 1),
       train_s=round(train_s, 1),
       images_per_s=round((epochs - 1) * steps_per_epoch * args.batch
                          / max(train_s - first_epoch_s, 1e-9), 1),
       final_train_loss=round(loss, 4), val_accuracy=history[-1], best_val_accuracy=max(history),
       val_balanced_accuracy=round(summary["val_balanced_accuracy"], 4),
       val_accuracy_by_epoch=history, device=str(jax.devices()[0].device_kind))


def main(argv=None):
  args = parse_args(argv)
  images_per_s = bench_ours(args, args.batch)
  if not args.skip_timm:
    bench_timm(args)
  if not args.skip_train:
    train_from_scratch(args, images_per_s)
  if args.small_batch:
    bench_ours(args, args.small_batch)


if __name__ == "__main__":
  sys.exit(main())
