"""Writes Keras reference files for the ported models' parity tests (run in its own process).

usage: python tests/helpers/keras_reference.py OUT_DIR [--size=N]

Per reference (`REFERENCES`): Keras weight files in the formats the port reads, the model's
output on one random [0, 255] input batch in inference mode, and each block's output (for the
block-by-block comparison); for the freezing references, the weights Keras leaves trainable
after freezing the first N of `model.layers` (no outputs: only names are compared).
"""

import json
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # builds 3x faster than jax here

import h5py  # pylint: disable=g-import-not-at-top,wrong-import-position
import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=wrong-import-position

# name: (Keras constructor, with the top or not, weight file formats, block-name regex,
#        first N layers to freeze or 0). B0 and MobileNetV3-Small check every format (ConvNeXt's
#        files are large); S, ConvNeXt-Small and MobileNetV3-Small are the study's.
ALL_FORMATS = (".h5", "_model.h5", ".weights.h5")
REFERENCES = {
    "b0_top": ("EfficientNetV2B0", True, ALL_FORMATS, r"(block\d+[a-z])_", 0),
    "b0_notop": ("EfficientNetV2B0", False, (".h5", ".weights.h5"), r"(block\d+[a-z])_", 0),
    "s_notop": ("EfficientNetV2S", False, (".h5",), r"(block\d+[a-z])_", 480),
    "convnext_tiny_top": ("ConvNeXtTiny", True, (".weights.h5",),
                          r"convnext_tiny_(stage_\d_block_\d)_", 0),
    "convnext_tiny_notop": ("ConvNeXtTiny", False, (".h5",), r"convnext_tiny_(stage_\d_block_\d)_",
                            0),
    "convnext_small_notop": ("ConvNeXtSmall", False, (), "", 200),
    "mobilenetv3_small_top": ("MobileNetV3Small", True, ALL_FORMATS,
                              r"(expanded_conv(?:_\d+)?)_", 0),
    "mobilenetv3_small_notop": ("MobileNetV3Small", False, (".h5",),
                                r"(expanded_conv(?:_\d+)?)_", 120),
    "mobilenetv3_large_notop": ("MobileNetV3Large", False, (".h5", ".weights.h5"),
                                r"(expanded_conv(?:_\d+)?)_", 0),
    "mobilenetv3_small_alpha075_notop": ("MobileNetV3Small", False, (".weights.h5",),
                                         r"(expanded_conv(?:_\d+)?)_", 0),
}
CONSTRUCTOR_ARGS = {"mobilenetv3_small_alpha075_notop": {"alpha": 0.75}}


def block_outputs(model, pattern: str):
  """{block: the tensor after it}: the input of the first layer past the block's layers (the
  output of its residual sum, which Keras computes outside any layer)."""
  blocks, current = {}, None
  for layer in model.layers:
    match = re.match(pattern, layer.name)
    block = match[1] if match else None
    if current is not None and block != current:
      blocks[current] = layer.input
    current = block
  return blocks


def randomize(model, rng):
  """Random normalisation parameters, statistics and layer scales, so that the test checks
  they are ported. Residual branches are damped as in trained networks: with Keras's random
  init a deep stack is chaotic (a 1e-6 input change moves the output by 40%), and no two
  implementations could agree on it."""
  for layer in model._flatten_layers():  # pylint: disable=protected-access  (nested stems)
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.moving_mean.shape[0]
      low, high = (0.1, 0.3) if layer.name.endswith("project_bn") else (0.8, 1.2)
      layer.gamma.assign(rng.uniform(low, high, n).astype(np.float32))
      layer.beta.assign(rng.normal(0, 0.05, n).astype(np.float32))
      layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
      layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
    elif isinstance(layer, keras.layers.LayerNormalization):
      n = layer.gamma.shape[0]
      layer.gamma.assign(rng.uniform(0.8, 1.2, n).astype(np.float32))
      layer.beta.assign(rng.normal(0, 0.05, n).astype(np.float32))
    elif layer.name.endswith("_layer_scale"):  # 1e-6 would hide every block
      layer.weights[0].assign(rng.uniform(0.1, 0.3, layer.weights[0].shape).astype(np.float32))


def write(out_dir: str, size: int):
  os.makedirs(out_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
  np.save(os.path.join(out_dir, "images.npy"), images)
  for stem, (constructor, top, formats, pattern, freeze) in REFERENCES.items():
    keras.utils.set_random_seed(1)
    model = getattr(keras.applications, constructor)(
        weights=None, include_top=top, input_shape=(size, size, 3), classes=8,
        classifier_activation=None, pooling=None if top else "avg",
        **CONSTRUCTOR_ARGS.get(stem, {}))
    randomize(model, rng)
    for suffix in formats:
      path = os.path.join(out_dir, stem + suffix)
      if suffix == ".h5":
        with h5py.File(path, "w") as f:
          legacy_h5_format.save_weights_to_hdf5_group(f, model)
      elif suffix == "_model.h5":
        model.save(path)
      else:
        model.save_weights(path)
    if formats:
      np.save(os.path.join(out_dir, f"{stem}_output.npy"),
              np.asarray(model(images, training=False)))
      blocks = block_outputs(model, pattern)
      outputs = keras.Model(model.input, list(blocks.values()))(images, training=False)
      np.savez(os.path.join(out_dir, f"{stem}_blocks.npz"),
               **{b: np.asarray(o) for b, o in zip(blocks, outputs)})
    if freeze:
      for layer in model.layers[:freeze]:
        layer.trainable = False
      record = {"layers": [[layer.name, bool(layer.weights)] for layer in model.layers],
                "trainable": sorted(w.path for w in model.trainable_weights),
                "frozen": sorted(w.path for layer in model.layers[:freeze]
                                 for w in layer.weights if "moving" not in w.path)}
      with open(os.path.join(out_dir, f"{stem}_freeze{freeze}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
  size = next((int(a.split("=")[1]) for a in sys.argv[2:] if a.startswith("--size=")), 64)
  write(sys.argv[1], size)
