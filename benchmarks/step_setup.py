"""Shared by the benchmark scripts: the jitted train step of a recipe on a fixed random batch,
and the median time of a jitted call."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def load_config(path):
  from bloodcell_jax.config import recipes  # pylint: disable=g-import-not-at-top
  return recipes.load_config_file(path)


def random_batch(batch, image_size, num_classes=8, seed=0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  images = rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32)
  return images, rng.integers(0, num_classes, batch).astype(np.int32)


def jitted_step(config, batch, image_size, grad_accum_steps=1):
  """(train_fn, state, device batch) for `config`'s model, optimizer and loss, set up as
  launch.py sets up a run (`runtime.set_up`, before JAX starts)."""
  from bloodcell_jax import runtime  # pylint: disable=g-import-not-at-top
  runtime.set_up()
  import jax  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.training import model_and_optimizer, sharding, steps  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  with config.unlocked():
    config.image_size = image_size
  model, tx_factory, _ = model_and_optimizer.build(config, 8, 100, 1000)
  state, tx = steps.create_train_state(model, tx_factory, jax.random.PRNGKey(0), image_size,
                                       mesh)
  train_fn = steps.jit_train_step(
      mesh, model=model, tx=tx, learning_rate_fn=lambda s: config.optim.learning_rate,
      loss_config=steps.LossConfig(num_classes=8, l2=config.loss.l2,
                                   label_smoothing=config.loss.label_smoothing),
      grad_accum_steps=grad_accum_steps)
  images, labels = random_batch(batch, image_size)
  device_batch = sharding.global_batch({"image": images, "label": labels}, mesh)
  return train_fn, state, device_batch


def median_ms(fn, args, repeats):
  """The median of `repeats` timed calls of `fn(*args)` after two warm-up calls, in ms."""
  import time  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(2):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  times.sort()
  return 1000 * times[len(times) // 2]
