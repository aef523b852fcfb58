"""Augmentation throughput: the project's tf.data pipeline against Keras 3's layers, on real images.

  python benchmarks/augment.py                          # every pipeline, both impls
  python benchmarks/augment.py --pipeline=study_final --repeats=5

Prints one JSON object per line, {"bench": "augment", "pipeline", "impl", "images_per_s",
...}, then one line of ratios (ours / Keras). Both sides read the same decoded images
from memory and produce float32 batches of 64 as numpy arrays, through tf.data with
parallel calls. Ours draws every op choice per image; Keras's RandAugment and AugMix
draw one per batch. Keras runs on its TensorFlow backend, as a tf.data map should.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import step_setup  # pylint: disable=g-bad-import-order,unused-import

from configs import cnn_robust  # pylint: disable=g-bad-import-order

PIPELINES = {
    "basic": "flip|affine(rotate=0.1, translate=0.1, zoom=0.1)",
    "randaugment": "randaugment(num_ops=2, magnitude=0.5)",
    "augmix": "augmix(severity=0.3)",
    "study_final": ("randaugment(num_ops=2, magnitude=0.5)|augmix(severity=0.3)"
                    "|random_brightness(0.2)|random_contrast(0.2)"),
    # Ours only (Keras has no such layers): the shift families and configs/cnn_robust.py's.
    "shifts": "shifts(severity=1.0)",
    "hed_jitter": "hed_jitter(sigma=0.05, bias=0.02)",
    "cnn_robust": cnn_robust.get_config().augment.train,
}
IMPLS = ("bloodcell_jax", "keras")
KERAS_PIPELINES = ("basic", "randaugment", "augmix", "study_final")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=os.path.join(step_setup.ROOT, "..", "shared", "data",
                                                     "pbc96"))
  parser.add_argument("--pipeline", choices=tuple(PIPELINES), default=None)
  parser.add_argument("--impl", choices=IMPLS, default=None)
  parser.add_argument("--images", type=int, default=4096, help="distinct images read")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=40, help="timed batches per repeat")
  parser.add_argument("--repeats", type=int, default=3)
  return parser.parse_args(argv)


def keras_layers(name):
  import keras  # pylint: disable=g-import-not-at-top
  layers = keras.layers
  value_range = (0, 255)
  randaugment = lambda: layers.RandAugment(value_range=value_range, num_ops=2, factor=0.5)
  augmix = lambda: layers.AugMix(value_range=value_range, factor=0.3, chain_depth=3)
  return {
      "basic": lambda: [layers.RandomFlip("horizontal_and_vertical"),
                        layers.RandomTranslation(0.1, 0.1), layers.RandomRotation(0.1),
                        layers.RandomZoom(0.1)],
      "randaugment": lambda: [randaugment()],
      "augmix": lambda: [augmix()],
      "study_final": lambda: [randaugment(), augmix(),
                              layers.RandomBrightness(0.2, value_range=value_range),
                              layers.RandomContrast(0.2, value_range=value_range)],
  }[name]()


def keras_batches(images, name, batch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  layers = keras_layers(name)

  def augment(x):
    x = tf.cast(x, tf.float32)
    for layer in layers:
      x = layer(x, training=True)
    return x
  ds = tf.data.Dataset.from_tensor_slices(images).repeat().batch(batch, drop_remainder=True)
  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
  return ds.as_numpy_iterator()


def our_batches(source, name, args):
  from bloodcell_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.train_batches(source, seed=0, batch_size=args.batch, start_step=0,
                                num_steps=5 + args.repeats * args.batches,
                                augmentation=PIPELINES[name])


def images_per_s(batches, args):
  """Median throughput over repeats of `args.batches` batches, after a warm-up."""
  for _ in range(5):
    next(batches)
  rates = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    for _ in range(args.batches):
      next(batches)
    rates.append(args.batches * args.batch / (time.perf_counter() - start))
  return statistics.median(rates), rates


def main(argv=None):
  args = parse_args(argv)
  import numpy as np  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(args.data):
    sys.exit(f"--data={args.data}: not a directory (expected an ImageFolder such as pbc96)")
  data = sources.read_image_folder(args.data, 96)
  rng = np.random.default_rng(0)
  subset = data.subset(np.sort(rng.choice(len(data), min(args.images, len(data)),
                                          replace=False)))
  source = pipeline.InMemorySource(subset)
  results = {}
  for name in [args.pipeline] if args.pipeline else PIPELINES:
    for impl in [args.impl] if args.impl else IMPLS:
      if impl == "keras" and name not in KERAS_PIPELINES:
        continue
      batches = (our_batches(source, name, args) if impl == "bloodcell_jax"
                 else keras_batches(subset.images, name, args.batch))
      median, rates = images_per_s(batches, args)
      del batches  # stop its prefetching threads before the next measurement
      gc.collect()
      results[name, impl] = median
      print(json.dumps({"bench": "augment", "pipeline": name, "impl": impl,
                        "images_per_s": round(median, 1),
                        "repeats": [round(r, 1) for r in rates], "batch": args.batch,
                        "per_image_choices": impl == "bloodcell_jax",
                        "spec": PIPELINES[name] if impl == "bloodcell_jax" else None}),
            flush=True)
  ratios = {name: round(results[name, "bloodcell_jax"] / results[name, "keras"], 2)
            for name, impl in results if impl == "keras" and (name, "bloodcell_jax") in results}
  if ratios:
    print(json.dumps({"bench": "augment_ratio", "ours_over_keras": ratios}), flush=True)


if __name__ == "__main__":
  main()
