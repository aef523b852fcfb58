"""How far a float32 train step's gradients are from exact ones: this library's BatchNorm
against flax.linen.BatchNorm in the same model, both measured against float64.

  python benchmarks/gradient_precision.py [--config=configs/cnn.py] [--batch=64] [--seed=0]

One batch of uniform random images and labels, the recipe's model with its initial weights
and without dropout or stochastic depth (whose float32 and float64 masks differ), and the
gradient of the cross-entropy with respect to every parameter, three times: in float32 with
each BatchNorm, and in float64 (the reference; both BatchNorms agree there to 1e-13).

Prints one JSON line per parameter, {"bench": "gradient_precision", "param", "ours", "flax"}:
the relative L2 error |g32 - g64| / |g64|; then a summary line with the largest of each.
"""

import argparse
import json
import os

import step_setup  # pylint: disable=g-bad-import-order  (puts the project on sys.path)

from bloodcell_jax import runtime  # pylint: disable=g-bad-import-order

runtime.set_up()
import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top

from bloodcell_jax import models  # pylint: disable=g-import-not-at-top
from bloodcell_jax.models import layers  # pylint: disable=g-import-not-at-top
from bloodcell_jax.training import steps  # pylint: disable=g-import-not-at-top

NUM_CLASSES = 8


def recipe(path: str):
  config = step_setup.load_config(path)
  for key in config.model:  # dropout, top_dropout, drop_connect_rate, ...
    if "drop" in key:
      config.model[key] = 0.0
  return config


def flax_batch_norm(*args, product_gradient=True, **kwargs):
  del product_gradient  # this library's option; flax differentiates its own forward pass
  return nn.BatchNorm(*args, **kwargs)


def gradients(config, params, batch_stats, images, labels, dtype):
  """d(mean cross-entropy)/d(params) in training mode, computed in `dtype`."""
  config.model.dtype = config.model.param_dtype = jnp.dtype(dtype).name
  model = models.build_model(config, NUM_CLASSES)
  cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)

  def loss(params):
    logits, _ = model.apply({"params": params, "batch_stats": cast(batch_stats)},
                            jnp.asarray(images, dtype), train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return jax.device_get(jax.jit(jax.grad(loss))(cast(params)))


def relative_errors(approximate, exact) -> dict:
  flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v, np.float64)
                       for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  exact = flat(exact)
  return {k: float(np.linalg.norm(v - exact[k]) / np.linalg.norm(exact[k]))
          for k, v in flat(approximate).items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(step_setup.ROOT, "configs", "cnn.py"))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  config = recipe(args.config)
  params, batch_stats = jax.device_get(steps.init_variables(
      models.build_model(config, NUM_CLASSES), jax.random.PRNGKey(args.seed), config.image_size))
  images, labels = step_setup.random_batch(args.batch, config.image_size, NUM_CLASSES,
                                           args.seed)  # float32 values, the same in float64
  with jax.enable_x64():
    exact = gradients(config, params, batch_stats, images, labels, jnp.float64)
  ours = relative_errors(gradients(config, params, batch_stats, images, labels, jnp.float32),
                         exact)
  original = layers.BatchNorm
  layers.BatchNorm = flax_batch_norm
  try:
    theirs = relative_errors(gradients(config, params, batch_stats, images, labels,
                                       jnp.float32), exact)
  finally:
    layers.BatchNorm = original
  for name in ours:
    print(json.dumps({"bench": "gradient_precision", "param": name,
                      "ours": float(f"{ours[name]:.2g}"), "flax": float(f"{theirs[name]:.2g}")}))
  print(json.dumps({"bench": "gradient_precision", "config": args.config, "batch": args.batch,
                    "largest_ours": float(f"{max(ours.values()):.2g}"),
                    "largest_flax": float(f"{max(theirs.values()):.2g}")}))


if __name__ == "__main__":
  main()
