"""Keras parity of the ported models, against the files of the `keras_ref` fixture
(helpers/keras_reference.py)."""

import collections
import functools

import numpy as np

PARITY_TOLERANCE = 1e-4  # max |flax - keras| / max |keras|, inference mode


def relative_error(got, want) -> float:
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def compare_stages(intermediates, keras_blocks, tolerance=PARITY_TOLERANCE):
  """Asserts block by block, in order, so that a mismatch names the first block that differs."""
  for block in keras_blocks.files:
    got = intermediates[block]["__call__"][0]
    error = relative_error(got, keras_blocks[block])
    assert error <= tolerance, f"first mismatch at {block}: relative error {error:.2e}"


def run_with_intermediates(model, variables, images):
  import jax  # pylint: disable=g-import-not-at-top
  # Jitted: compiling the whole forward pass once is 10x faster than running it op by op.
  out, state = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                         mutable=["intermediates"]))(variables, images)
  return np.asarray(out), state["intermediates"]


def freezing_against_keras(config, record, image_size=64):
  """(ours, Keras's) frozen and trainable parameters per Flax module: Counters of module paths,
  Keras's weights mapped through the model's port (its running statistics left out)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from bloodcell_jax import models  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.training import freezing  # pylint: disable=g-import-not-at-top
  port = models.get_spec(config.model.name).keras
  model = models.build_model(config, 8)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, image_size, image_size, 3))))
  labels = traverse_util.flatten_dict(freezing.freeze_labels(config, shapes["params"]), sep="/")
  ours = {state: collections.Counter(p.rsplit("/", 1)[0] for p, v in labels.items()
                                     if v == state) for state in ("freeze", "train")}
  keras_module = lambda path: port.module_path(path.split("/")[-2])
  keras = {"freeze": collections.Counter(map(keras_module, record["frozen"])),
           "train": collections.Counter(map(keras_module, record["trainable"]))}
  return ours, keras
