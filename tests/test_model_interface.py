"""The model interface: a model defined here, registered here, goes through training, both kinds
of freezing, frozen BatchNorm, staged restarts and inference with no change to library code."""

import ast
import subprocess
import sys

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bloodcell_jax import models
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import inference
from bloodcell_jax.models.layers import batch_norm
from bloodcell_jax.weights import init_from
from configs import default
from tests.conftest import ROOT, subprocess_env

NAME = "test-tiny-net"


class TinyNet(nn.Module):
  """Two conv + BatchNorm layers and a classifier, named as a Keras port would name them."""
  num_classes: int = 8
  width: int = 4
  frozen_bn: tuple = ()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x / 255.0
    for name in ("stem", "block1"):
      x = nn.Conv(self.width, (3, 3), (2, 2), use_bias=False, name=f"{name}_conv")(x)
      x = nn.relu(batch_norm(self, x, f"{name}_bn", train, frozen=self.frozen_bn))
    return nn.Dense(self.num_classes, name="classifier")(x.mean(axis=(1, 2)))


# `model.layers` of the Keras model this one would be a port of.
KERAS_LAYERS = (("input_layer", False), ("stem_conv", True), ("stem_bn", True),
                ("stem_relu", False), ("block1_conv", True), ("block1_bn", True),
                ("block1_relu", False), ("avg_pool", False))

models.register(NAME, head=("classifier",), frozen_batch_norm=True,
                defaults=dict(width=4, dtype="float32", param_dtype="float32"),
                keras=models.KerasPort(layers=lambda include_top, model_args: KERAS_LAYERS,
                                       module_path=lambda layer: layer, application="TinyNet"),
                )(lambda num_classes=8, **kwargs: TinyNet(num_classes=num_classes, **kwargs))


def tiny_config():
  config = default.get_config(model=NAME)
  config.update(image_size=16, batch_size=16, eval_batch_size=32, num_epochs=1)
  config.data.synthetic_size = 96
  config.data.val_fraction = 0.25
  config.train.log_every_steps = 2
  config.augment.train = "flip"
  config.eval.report = False
  # s1 trains all; s2 freezes Keras layers[:4] (stem_conv, stem_bn); s3 freezes block1 by regex.
  config.stages.s1_all = dict(optim=dict(freeze_keras_layers=0))
  config.stages.s2_first_4 = dict(optim=dict(freeze_keras_layers=4))
  config.stages.s3_regex = dict(optim=dict(freeze=[("block1_.*", "freeze"), (".*", "train")]))
  return config


def flat_variables(workdir):
  variables = init_from.load_variables(str(workdir), NAME)
  return {c: traverse_util.flatten_dict(variables[c], sep="/") for c in variables}


def test_a_model_registered_outside_the_library_trains_freezes_and_restores(tmp_path):
  from bloodcell_jax.trainer import run as train  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = tiny_config()
  results = train.run_stages(config, str(tmp_path))
  assert sorted(results["stages"]) == ["s1_all", "s2_first_4", "s3_regex"]
  s1, s2, s3 = (flat_variables(tmp_path / n) for n in sorted(results["stages"]))
  same = lambda a, b, path: np.array_equal(a[path], b[path])
  # First-N Keras layers: the stem's weights and its BatchNorm statistics (inference mode).
  for path in ("stem_conv/kernel", "stem_bn/scale", "stem_bn/bias"):
    assert same(s1["params"], s2["params"], path), path
  for path in ("stem_bn/mean", "stem_bn/var"):
    assert same(s1["batch_stats"], s2["batch_stats"], path), path
  assert not same(s1["params"], s2["params"], "block1_conv/kernel")
  assert not same(s1["batch_stats"], s2["batch_stats"], "block1_bn/mean")
  # Regex rules: block1 frozen, the stem trains again; the head is kept between stages.
  assert same(s2["params"], s3["params"], "block1_conv/kernel")
  assert same(s2["batch_stats"], s3["batch_stats"], "block1_bn/var")
  assert not same(s2["params"], s3["params"], "stem_conv/kernel")
  assert results["stages"]["s3_regex"]["weights"]["head_reinitialised"] == []
  assert results["stages"]["s2_first_4"]["weights"]["frozen_parameters"] == 4 * 3 * 3 * 3 + 8

  # Rerunning finds every stage finished: restored from its checkpoints, same results.
  again = train.run_stages(tiny_config(), str(tmp_path))
  assert again["val_accuracy"] == results["val_accuracy"]
  _, class_names, model, state = inference.load_run(str(tmp_path / "s3_regex"))
  images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
  probabilities = inference.predict(model, state, images, batch_size=4)
  assert probabilities.shape == (3, len(class_names))
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_rules_that_leave_a_parameter_unmatched_fail_at_start(tmp_path):
  from bloodcell_jax.trainer import run as train  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = tiny_config()
  config.stages = type(config.stages)()
  config.optim.freeze = [("stem_.*", "freeze")]
  with pytest.raises(UserError, match="^config.optim.freeze: no rule matches parameter "
                     "'block1_bn/bias' \\(and 4 more\\); end the list with a catch-all"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


CHANGED = ("print({k: os.environ.get(k) for k in before.keys() | os.environ.keys() "
           "if before.get(k) != os.environ.get(k)})")


@pytest.mark.parametrize("imports, allowed", [
    # The package itself, first thing in a process (XLA flags take effect only then); JAX's
    # own import sets TF_CPP_MIN_LOG_LEVEL=1.
    ("import bloodcell_jax, bloodcell_jax.models", {"TF_CPP_MIN_LOG_LEVEL": "1"}),
    # A recipe and the pipeline, after the libraries underneath, which set variables of their
    # own on import (TensorFlow's TF2_BEHAVIOR, h5py's HDF5_PLUGIN_PATH).
    ("import tensorflow, h5py, sklearn, matplotlib, jax; before = dict(os.environ); "
     "import bloodcell_jax.data.pipeline, bloodcell_jax.trainer.run; from configs import effnet; "
     "effnet.get_config()", {})])
def test_importing_the_library_and_loading_a_config_change_no_environment_variable(imports,
                                                                                  allowed):
  code = f"import os; before = dict(os.environ); {imports}; {CHANGED}"
  env = {k: v for k, v in subprocess_env().items() if k not in ("XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL")}
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True, timeout=120)
  assert ast.literal_eval(result.stdout.strip().splitlines()[-1]) == allowed
