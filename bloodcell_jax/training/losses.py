"""Losses: weighted, label-smoothed cross-entropy, AugMix's Jensen-Shannon consistency, L1/L2."""

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from bloodcell_jax.training import param_rules


def weighted_cross_entropy(logits, labels, *, num_classes: int, class_weights=None,
                           label_smoothing: float = 0.0, mask=None):
  """Mean over the batch of w[label] * CE, as Keras's `class_weight` computes it.

  `labels` are integer classes (N,) or soft labels (N, C). `mask` (N,) zeroes
  padded examples out of the sum and the count.
  """
  targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  weights = jnp.ones_like(losses) if mask is None else mask
  if class_weights is not None:
    weights = weights * (targets @ class_weights)
  count = jnp.ones_like(losses).sum() if mask is None else jnp.maximum(mask.sum(), 1.0)
  return (losses * weights).sum() / count


def jensen_shannon(logits, mask=None):
  """AugMix's consistency loss over views (N, V, C): the mean over views of KL(p_v || M),
  M the views' mean distribution (clipped at 1e-7 as the paper's code), averaged over
  the batch (padded examples masked out)."""
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  probs = jax.nn.softmax(logits, axis=-1)
  log_mixture = jnp.log(jnp.clip(probs.mean(axis=1, keepdims=True), 1e-7, 1.0))
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  per_example = (probs * (log_probs - log_mixture)).sum(-1).mean(-1)
  if mask is None:
    return per_example.mean()
  return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def penalty_multipliers(params, rules):
  """Per-parameter factor of the L1/L2 penalty from `config.loss.regularize` rules."""
  parsed = param_rules.parse(rules, "config.loss.regularize", param_rules.multiplier)
  return param_rules.resolve(params, parsed, "config.loss.regularize", default=1.0)


def weight_penalty(params, *, l1: float = 0.0, l2: float = 0.0,
                   rules=((r".*kernel", 1.0), (".*", 0.0))):
  """Sum over parameters of m * (l1 * sum|w| + l2 * sum w^2), m the parameter's multiplier
  from `rules` (by default: kernels 1, everything else 0).

  Keras's `kernel_regularizer`: added to the loss, so it is scaled by the
  learning rate and adapted by Adam like any other gradient.
  """
  if not (l1 or l2):
    return 0.0
  factors = traverse_util.flatten_dict(penalty_multipliers(params, rules), sep="/")
  total = 0.0
  for path, value in traverse_util.flatten_dict(params, sep="/").items():
    if factors[path]:
      total += factors[path] * (l1 * jnp.abs(value).sum() + l2 * jnp.square(value).sum())
  return total
