"""Test-time adaptation without labels: BatchNorm statistics of the target images (AdaBN).

BatchNorm's running statistics carry the training lab's image statistics. Li et al.
(2016, "Revisiting batch normalization for practical domain adaptation") replace them
with the target domain's: here, train-mode forward passes over the target images,
averaging each layer's batch mean and variance over the batches (as torch's
`update_bn`), with dropout and stochastic depth off. Imports no TensorFlow.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bloodcell_jax.training import sharding


def _deterministic(model):
  """The model with every dropout-like rate (dropout, stochastic depth) at 0."""
  rates = {f.name: 0.0 for f in dataclasses.fields(model)
           if "drop" in f.name and isinstance(getattr(model, f.name), float)}
  return model.clone(**rates)


@functools.partial(jax.jit, static_argnums=0)
def _batch_statistics(model, params, batch_stats, images):
  """Each BatchNorm layer's mean and variance over `images` (train mode, this batch only).

  The running update is m * old + (1 - m) * batch, with each model's own momentum m (Keras
  uses 0.9 or 0.999): from zeros it leaves (1 - m) * batch, from ones m + (1 - m) * batch,
  so one minus their difference is 1 - m.
  """
  def update(start):
    _, updates = model.apply({"params": params, "batch_stats": start}, images, train=True,
                             mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
    return updates["batch_stats"]
  from_zeros = update(jax.tree.map(jnp.zeros_like, batch_stats))
  from_ones = update(jax.tree.map(jnp.ones_like, batch_stats))
  return jax.tree.map(lambda z, o: z / (1.0 - (o - z)), from_zeros, from_ones)


def adapt_batch_stats(model, state, images: np.ndarray, batch_size: int = 256):
  """`state` with its BatchNorm statistics recomputed on `images` (uint8 or float, N x H x W x
  3): the means over batches of each layer's batch mean and variance. A model without
  BatchNorm comes back unchanged."""
  if not state.batch_stats:
    return state
  model = _deterministic(model)
  params, batch_stats = jax.device_get((state.params, state.batch_stats))
  total, weight = None, 0
  for start in range(0, len(images), batch_size):
    chunk = np.asarray(images[start:start + batch_size], np.float32)
    stats = _batch_statistics(model, params, batch_stats, chunk)
    count = len(chunk)
    stats = jax.tree.map(lambda s, n=count: np.asarray(s, np.float64) * n, stats)
    total = stats if total is None else jax.tree.map(np.add, total, stats)
    weight += len(chunk)
  adapted = jax.tree.map(lambda t, old: (t / weight).astype(old.dtype), total, batch_stats)
  return state.replace(batch_stats=jax.device_put(adapted,
                                                  sharding.replicated(sharding.make_mesh())))
