"""The Keras weight port on Keras's own files (the `keras_ref` fixture runs
helpers/keras_reference.py in its own process): its refusals of files that do not fit, and its
program, whose checkpoint init_from loads and whose download without network fails at once."""

import shutil
import subprocess
import sys
import time
import warnings

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax import models
from bloodcell_jax.errors import UserError
from bloodcell_jax.weights import init_from, keras_port
from helpers import ROOT
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e

MODEL = {"b0": "efficientnetv2-b0", "s": "efficientnetv2-s"}


def _copy_without_layer(src, dst, layer):
  shutil.copy(src, dst)
  with h5py.File(dst, "r+") as f:
    names = [n for n in f.attrs["layer_names"] if keras_port._text(n) != layer]
    f.attrs["layer_names"] = names
    del f[layer]


def test_port_refuses_files_that_do_not_fit(keras_ref, tmp_path):
  with pytest.raises(UserError, match=r"stem_conv/kernel has shape \(3, 3, 3, 24\), "
                     r"efficientnetv2-b0 expects .* is --model right"):
    keras_port.load_keras_weights(MODEL["b0"], str(keras_ref / "s_notop.h5"))
  _copy_without_layer(keras_ref / "b0_notop.h5", tmp_path / "cut.h5", "block4b_se_reduce")
  with pytest.raises(UserError, match=r"model variables missing from the file \(2\): "
                     r"params/block4b/se_reduce/bias, params/block4b/se_reduce/kernel"):
    keras_port.load_keras_weights(MODEL["b0"], str(tmp_path / "cut.h5"))
  (tmp_path / "junk.h5").write_text("not hdf5")
  with pytest.raises(UserError, match="junk.h5: not a readable HDF5 file"):
    keras_port.load_keras_weights(MODEL["b0"], str(tmp_path / "junk.h5"))
  with pytest.raises(UserError,
                     match="^--model=cnn: expected one of convnext-base, .*efficientnetv2-b0, "):
    keras_port.load_keras_weights("cnn", str(keras_ref / "b0_notop.weights.h5"))
  with pytest.raises(UserError, match="^--model=resnet50: expected one of convnext-base, "):
    keras_port.load_keras_weights("resnet50", str(keras_ref / "b0_notop.weights.h5"))
  # A Keras 3 file of another model: the error alone, not Keras's warning for every layer.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with pytest.raises(UserError, match=r"b0_notop.weights.h5: does not fit keras.applications"
                       r".EfficientNetV2S \(.*\); is --model right\?$"):
      keras_port.load_keras_weights(MODEL["s"], str(keras_ref / "b0_notop.weights.h5"))
  assert not caught


def test_port_refuses_another_familys_file(keras_ref):
  with pytest.raises(UserError, match=r"does not match mobilenetv3-small: file tensors with no "
                     r"place in the model \(\d+\): convnext_tiny_"):
    keras_port.load_keras_weights("mobilenetv3-small", str(keras_ref / "convnext_tiny_notop.h5"))


def test_port_cli_writes_a_checkpoint_that_init_from_loads(keras_ref, tmp_path):
  out = tmp_path / "ported"
  subprocess.run([sys.executable, "-m", "bloodcell_jax.weights.keras_port",
                  "--model=efficientnetv2-b0", f"--keras_weights={keras_ref / 'b0_notop.h5'}",
                  f"--out={out}"], cwd=ROOT, env=subprocess_env(), check=True,
                 capture_output=True)
  direct = keras_port.load_keras_weights(MODEL["b0"], str(keras_ref / "b0_notop.h5"))
  ported = init_from.load_variables(str(out), MODEL["b0"])
  jax.tree.map(np.testing.assert_array_equal, ported, direct)
  # Into the study's head: the backbone is the port's, the new head keeps its fresh values.
  model = models.get_model(MODEL["b0"], num_classes=8, head="flatten")
  # A recognisable stand-in for a fresh initialisation (initialising runs the model).
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  fresh = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)
  merged, summary = init_from.merge(fresh, ported, models.get_spec(MODEL["b0"]).head, False,
                                    str(out))
  assert summary["head_reinitialised"] == ["head_dense", "predictions"]
  np.testing.assert_array_equal(merged["params"]["stem_conv"]["kernel"],
                                direct["params"]["stem_conv"]["kernel"])
  np.testing.assert_array_equal(merged["params"]["predictions"]["kernel"],
                                fresh["params"]["predictions"]["kernel"])
  with pytest.raises(UserError, match="missing .*head_dense"):
    init_from.merge(fresh, ported, models.get_spec(MODEL["b0"]).head, True, str(out))
  with pytest.raises(UserError, match="holds efficientnetv2-b0 weights"):
    init_from.load_variables(str(out), MODEL["s"])


def test_download_without_network_fails_at_once_with_a_way_out(tmp_path):
  started = time.monotonic()
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.weights.keras_port",
                           "--download", f"--out={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, env=subprocess_env(
                              BLOODCELL_JAX_KERAS_WEIGHTS_URL="https://127.0.0.1:9/weights/"))
  assert result.returncode == 2
  assert "no file from 127.0.0.1" in result.stderr and "--keras_weights=PATH" in result.stderr
  assert time.monotonic() - started < 60
