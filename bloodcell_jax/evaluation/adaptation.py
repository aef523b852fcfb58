"""Adaptation without labels: BatchNorm statistics of the target images (AdaBN), and confident
pseudo-labels of the target images for self-training.

BatchNorm's running statistics carry the training lab's image statistics. Li et al.
(2016, "Revisiting batch normalization for practical domain adaptation") replace them
with the target domain's: here, train-mode forward passes over the target images,
averaging each layer's batch mean and variance over the batches (as torch's
`update_bn`), with dropout and stochastic depth off.

Self-training (Lee 2013; class-balanced as in Zou et al. 2018, "Unsupervised domain adaptation
for semantic segmentation via class-balanced self-training") labels the target images with the
trained run's own calibrated predictions, keeps the most confident of each predicted class, and
trains on them beside the labelled source images (trainer/run.py). Imports no TensorFlow.
"""

import dataclasses
import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bloodcell_jax.data.image_set import ImageSet
from bloodcell_jax.errors import UserError
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


# Fewer images than this give BatchNorm statistics noisier than the shift they correct (the
# statistics of one batch of training); below it AdaBN warns.
ADAPT_BN_MIN_IMAGES = 32


def adapt_batch_stats(model, state, images: np.ndarray, batch_size: int = 256):
  """`state` with its BatchNorm statistics recomputed on `images` (uint8 or float, N x H x W x
  3): the means over batches of each layer's batch mean and variance. A model without
  BatchNorm comes back unchanged."""
  if not state.batch_stats:
    return state
  if len(images) < ADAPT_BN_MIN_IMAGES:
    logging.warning("--adapt_bn on %d image%s: BatchNorm statistics estimated from fewer than "
                    "%d images can change predictions for the worse; give it %d or more of the "
                    "new lab's images", len(images), "s" if len(images) != 1 else "",
                    ADAPT_BN_MIN_IMAGES, ADAPT_BN_MIN_IMAGES)
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


def confident_picks(probabilities: np.ndarray, allowed: np.ndarray, min_confidence: float,
                    class_fraction: float):
  """(indices, labels) of the images to self-train on: each image's most probable class among
  the `allowed` ones (a boolean mask over the classes; the others' probabilities dropped and the
  rest renormalised), kept when that probability reaches `min_confidence` and the image is
  among the `class_fraction` most confident of the images predicted as that class (rounded
  up). Per-class shares keep a class the model favours from crowding out the others."""
  restricted = np.where(allowed[None, :], probabilities, 0.0)
  restricted = restricted / np.maximum(restricted.sum(axis=1, keepdims=True), 1e-12)
  labels, confidence = restricted.argmax(axis=1), restricted.max(axis=1)
  kept = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    ranked = members[np.argsort(-confidence[members], kind="stable")]
    top = ranked[:int(np.ceil(class_fraction * len(members)))]
    kept.append(top[confidence[top] >= min_confidence])
  indices = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
  return indices, labels[indices].astype(np.int32)


def pseudo_labelled(run_dir: str, path: str, image_size: int, class_names: Sequence[str],
                    classes: Sequence[str], min_confidence: float, class_fraction: float):
  """(ImageSet, summary): the images under `path` that the trained run in `run_dir` labels
  confidently (`confident_picks`, its calibrated probabilities, choosing among `classes`, or
  all its classes when empty), labelled in `class_names`' order."""
  from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  _, run_classes, model, state, _ = inference.load_run(run_dir)
  if list(run_classes) != list(class_names):
    raise UserError(f"config.init.weights={run_dir}: its classes {run_classes} are not the "
                    f"training data's {list(class_names)}")
  unknown = [c for c in classes if c not in class_names]
  if unknown:
    raise UserError(f"config.self_training.classes: {', '.join(unknown)} not among the run's "
                    f"classes ({', '.join(class_names)})")
  ids, images = inference.read_unlabelled(path, image_size)
  probabilities = inference.predict(model, state, images, batch_size=256,
                                    temperature=inference.run_temperature(run_dir))
  allowed = np.array([not classes or c in classes for c in class_names])
  indices, labels = confident_picks(probabilities, allowed, min_confidence, class_fraction)
  if not len(indices):
    raise UserError(f"config.self_training.unlabelled={path}: none of its {len(images)} images "
                    f"reaches config.self_training.min_confidence={min_confidence}")
  counts = np.bincount(labels, minlength=len(class_names))
  summary = {"source": path, "num_images": len(images), "num_pseudo_labelled": len(indices),
             "per_class": {n: int(k) for n, k in zip(class_names, counts) if k},
             "min_confidence": min_confidence, "class_fraction": class_fraction,
             "classes": list(classes) or list(class_names), "labelled_by": run_dir}
  chosen = ImageSet(images=images[indices], labels=labels,
                    ids=np.array([f"unlabelled/{ids[i]}" for i in indices]),
                    class_names=tuple(class_names), name=f"{path} (pseudo-labelled)")
  return chosen, summary
