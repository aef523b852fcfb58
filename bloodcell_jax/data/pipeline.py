"""tf.data input pipelines: a resumable training stream and exact evaluation passes.

Training reads an endless stream of epochs, each a seeded permutation of the
training set. Position p of the stream is example `perm(p // n)[p % n]`, so the
batches of any step can be rebuilt from (seed, step) alone: resuming at step s
yields exactly the batches an uninterrupted run would have seen, and nothing is
dropped at epoch ends. Each global batch is cut into one contiguous slice per
process. Augmentation seeds come from (seed, epoch, example index), so an
image's augmentation does not depend on batch size, process count or order.

Evaluation visits every example exactly once, padding the last batch and
marking the padding with `mask == 0`.
"""

import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from bloodcell_jax.augment import ops as augment
from bloodcell_jax.data.image_set import ImageSet
from bloodcell_jax.errors import UserError

# Batches kept ready: the train step takes longer than augmenting one, so two cover it.
_PREFETCH = 2
# Without autotuning: its thread made deleting a finished iterator wait for it, 5-35 s at the
# end of a training run on 2 cores; the parallelism and the prefetch are set here instead.
_OPTIONS = tf.data.Options()
_OPTIONS.autotune.enabled = False
_EVAL_STREAM = 1 << 30  # the 'epoch' used for seeding evaluation-time augmentation
# Batches augmented at once: one per core and one more. AUTOTUNE runs more, which fight
# over the cores and the cache (the study's pipeline: 1,050 against 1,250 images/s on 2 cores).
_BATCH_PARALLELISM = len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") \
    else (os.cpu_count() or 1) + 1


def stream_indices(num_examples: int, seed: int, start: int, stop: int):
  """(example index, epoch) at stream positions [start, stop)."""
  positions = np.arange(start, stop, dtype=np.int64)
  epochs = positions // num_examples
  examples = np.empty_like(positions)
  for epoch in np.unique(epochs):
    where = epochs == epoch
    permutation = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    examples[where] = permutation[positions[where] % num_examples]
  return examples, epochs


def process_slice(values: np.ndarray, batch_size: int, process_index: int,
                  process_count: int) -> np.ndarray:
  """This process's contiguous part of every global batch."""
  per_process = batch_size // process_count
  return values.reshape(-1, process_count, per_process)[:, process_index].reshape(-1)


class InMemorySource:
  """An ImageSet's arrays held once as tensors, shared by every pipeline over it."""

  def __init__(self, data: ImageSet):
    self.data = data
    self.images = tf.convert_to_tensor(data.images)
    self.labels = tf.convert_to_tensor(data.labels)

  def __len__(self):
    return len(self.data)


def _dataset(source: InMemorySource, examples, epochs, mask, seed: int,
             augmentation: str, where: str, batch_size: int, views: int = 0,
             training: bool = True) -> tf.data.Dataset:
  """Batches of gathered, augmented examples. Each example's random draws come from its own
  stateless seed (per element); the ops then run on whole batches (one op call per batch)."""
  pipe = augment.parse(augmentation, where, views=views)
  if pipe.mixes_batch and not training:
    raise UserError(f"{where}: mixup and cutmix mix training batches; they cannot be used for "
                    "evaluation")
  num_classes = len(source.data.class_names)
  seed = tf.constant(seed, tf.int64)

  def draw(example, epoch, valid):
    image_seed = tf.random.experimental.stateless_fold_in(tf.stack([seed, epoch]), example)
    uniforms, gammas = pipe.draws(image_seed)
    return example, valid, uniforms, gammas

  def load(example, valid, uniforms=None, gammas=None):
    images = tf.gather(source.images, example)  # uint8: the first ops move 4x fewer bytes
    labels = tf.gather(source.labels, example)
    if pipe.is_identity:
      batch = {"image": tf.cast(images, tf.float32), "label": labels}
    else:
      batch = pipe(images, uniforms, gammas, labels=labels, num_classes=num_classes)
    batch["mask"] = valid
    return batch

  # The functions are graph code already: autograph's conversion would only cost start-up.
  draw, load = (tf.autograph.experimental.do_not_convert(f) for f in (draw, load))
  ds = tf.data.Dataset.from_tensor_slices((examples, epochs, mask))
  if pipe.is_identity:
    ds = ds.map(lambda example, epoch, valid: (example, valid))
  else:
    ds = ds.map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.map(load, num_parallel_calls=_BATCH_PARALLELISM, deterministic=True)
  return ds.prefetch(_PREFETCH).with_options(_OPTIONS)


def train_batches(source: InMemorySource, *, seed: int, batch_size: int,
                  start_step: int, num_steps: int, augmentation: str, views: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Local batches (numpy) for global steps [start_step, num_steps); `views` AugMix views per
  image for the Jensen-Shannon loss."""
  examples, epochs = stream_indices(len(source), seed, start_step * batch_size,
                                    num_steps * batch_size)
  examples, epochs = (process_slice(v, batch_size, process_index, process_count)
                      for v in (examples, epochs))
  mask = np.ones(len(examples), np.float32)
  ds = _dataset(source, examples, epochs, mask, seed, augmentation,
                "config.augment.train", batch_size // process_count, views=views)
  return ds.as_numpy_iterator()


def eval_batches(source: InMemorySource, *, batch_size: int, augmentation: str = "",
                 seed: int = 0, process_index: int = 0, process_count: int = 1,
                 where: str = "evaluation") -> Iterator[dict]:
  """Every example once, in order, padded to whole global batches (mask 0)."""
  n = len(source)
  padded = -(-n // batch_size) * batch_size
  examples = np.zeros(padded, np.int64)
  examples[:n] = np.arange(n)
  mask = (np.arange(padded) < n).astype(np.float32)
  examples, mask = (process_slice(v, batch_size, process_index, process_count)
                    for v in (examples, mask))
  epochs = np.full(len(examples), _EVAL_STREAM, np.int64)
  ds = _dataset(source, examples, epochs, mask, seed, augmentation, where,
                batch_size // process_count, training=False)
  return ds.as_numpy_iterator()
