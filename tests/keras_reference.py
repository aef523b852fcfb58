"""Writes Keras reference files for the EfficientNetV2 parity tests (run in its own process).

usage: python tests/keras_reference.py OUT_DIR [--size=N]

For B0 with and without the top, and S without: Keras weight files in the three
formats the port reads, one random [0, 255] input batch, the model's output in
inference mode, each block's output (for the stage-by-stage comparison) and,
for S, the weights Keras leaves trainable after freezing its first 480 layers.
"""

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # builds 3x faster than jax here

import h5py  # pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=wrong-import-position

# (Keras constructor, with the top or not): the top's port is checked on B0, S is the study's.
VARIANTS = {"b0": ("EfficientNetV2B0", (True, False)), "s": ("EfficientNetV2S", (False,))}
FREEZE_FIRST = 480


def block_outputs(model):
  """Name of each block's last layer (its output), in order."""
  last = {}
  for layer in model.layers:
    if layer.name.startswith("block"):
      last[layer.name.split("_")[0]] = layer.name
  return list(last.values())


def write(out_dir: str, size: int):
  os.makedirs(out_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
  np.save(os.path.join(out_dir, "images.npy"), images)
  for short, (constructor, tops) in VARIANTS.items():
    for top in tops:
      keras.utils.set_random_seed(1)
      model = getattr(keras.applications, constructor)(
          weights=None, include_top=top, input_shape=(size, size, 3), classes=8,
          classifier_activation=None, pooling=None if top else "avg")
      stem = f"{short}_{'top' if top else 'notop'}"
      # Random BatchNorm parameters and statistics, so the test checks they are ported.
      # Residual branches are damped as in trained networks: with Keras's random
      # init the 40-block stack is chaotic (a 1e-6 input change moves the output
      # by 40%), and no two implementations could agree on it.
      for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
          n = layer.moving_mean.shape[0]
          low, high = (0.1, 0.3) if layer.name.endswith("project_bn") else (0.8, 1.2)
          layer.gamma.assign(rng.uniform(low, high, n).astype(np.float32))
          layer.beta.assign(rng.normal(0, 0.05, n).astype(np.float32))
          layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
          layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
      with h5py.File(os.path.join(out_dir, f"{stem}.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
      if short == "b0":
        model.save(os.path.join(out_dir, f"{stem}_model.h5"))
        model.save_weights(os.path.join(out_dir, f"{stem}.weights.h5"))
      np.save(os.path.join(out_dir, f"{stem}_output.npy"),
              np.asarray(model(images, training=False)))
      names = block_outputs(model)
      stages = keras.Model(model.input, [model.get_layer(n).output for n in names])
      outputs = stages(images, training=False)
      np.savez(os.path.join(out_dir, f"{stem}_blocks.npz"),
               **{n.split("_")[0]: np.asarray(o) for n, o in zip(names, outputs)})
      if short == "s" and not top:
        for layer in model.layers[:FREEZE_FIRST]:
          layer.trainable = False
        record = {"layers": [[layer.name, bool(layer.weights)] for layer in model.layers],
                  "trainable": sorted(w.path for w in model.trainable_weights),
                  "frozen": sorted(w.path for layer in model.layers[:FREEZE_FIRST]
                                   for w in layer.weights if "moving" not in w.path)}
        with open(os.path.join(out_dir, f"{stem}_freeze{FREEZE_FIRST}.json"), "w") as f:
          json.dump(record, f)


if __name__ == "__main__":
  size = next((int(a.split("=")[1]) for a in sys.argv[2:] if a.startswith("--size=")), 64)
  write(sys.argv[1], size)
