"""EfficientNetV2 against keras.applications: ported weights, numerical parity, freezing."""

import json
import os
import shutil
import socket
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
from configs import effnet_finetune30
from helpers import ROOT
from helpers.parity import (
  PARITY_TOLERANCE,
  compare_stages,
  freezing_against_keras,
  relative_error,
  run_with_intermediates,
)
from helpers.runs import subprocess_env

MODEL = {"b0": "efficientnetv2-b0", "s": "efficientnetv2-s"}


@pytest.mark.parametrize("stem, file_suffix", [
    ("b0_top", ".h5"), ("b0_top", "_model.h5"), ("b0_top", ".weights.h5"),
    ("b0_notop", ".h5"), ("b0_notop", ".weights.h5"), ("s_notop", ".h5")])
def test_ported_weights_reproduce_keras(keras_ref, stem, file_suffix):
  variant, top = stem.split("_")
  variables = keras_port.load_keras_weights(MODEL[variant], str(keras_ref / (stem + file_suffix)))
  model = models.get_model(MODEL[variant], num_classes=8, include_top=top == "top")
  out, intermediates = run_with_intermediates(model, variables, np.load(keras_ref / "images.npy"))
  # include_top: logits of the 8-class top; notop: the average-pooled features.
  assert relative_error(out, np.load(keras_ref / f"{stem}_output.npy")) <= PARITY_TOLERANCE
  compare_stages(intermediates, np.load(keras_ref / f"{stem}_blocks.npz"))


def test_stage_comparison_points_at_the_first_wrong_block(keras_ref):
  variables = keras_port.load_keras_weights(MODEL["s"], str(keras_ref / "s_notop.h5"))
  kernel = variables["params"]["block3b"]["project_conv"]["kernel"]
  variables["params"]["block3b"]["project_conv"]["kernel"] = kernel * 1.01
  model = models.get_model(MODEL["s"], include_top=False)
  _, intermediates = run_with_intermediates(model, variables, np.load(keras_ref / "images.npy"))
  with pytest.raises(AssertionError, match="first mismatch at block3b"):
    compare_stages(intermediates, np.load(keras_ref / "s_notop_blocks.npz"))


def test_keras_layer_order_is_keras(keras_ref):
  record = json.loads((keras_ref / "s_notop_freeze480.json").read_text())
  keras = [layer for layer in record["layers"] if layer[0] != "avg_pool"]  # pooling="avg"
  ours = models.get_spec(MODEL["s"]).keras.layers(False, {})
  assert len(ours) == len(keras) == 513
  assert [n for n, w in ours if w] == [n for n, w in keras if w]


def test_freezing_first_480_keras_layers_freezes_what_keras_does(keras_ref):
  record = json.loads((keras_ref / "s_notop_freeze480.json").read_text())
  config = effnet_finetune30.get_config()
  config.model.head = "none"
  assert config.optim.freeze_keras_layers == 480
  ours, keras = freezing_against_keras(config, record)
  assert ours == keras and sum(ours["freeze"].values()) == len(record["frozen"])


def test_every_variant_has_keras_parameter_count():
  # count_params() of keras.applications.EfficientNetV2*(weights=None), 1000 classes.
  keras_counts = {"b0": 7200312, "b1": 8212124, "b2": 10178374, "b3": 14467622,
                  "s": 21612360, "m": 54431388, "l": 119027848}
  for short, expected in keras_counts.items():
    model = models.get_model(f"efficientnetv2-{short}", num_classes=1000)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0),
                                                   jnp.zeros((1, 32, 32, 3))))
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected, short


def test_bfloat16_compute_keeps_float32_parameters(keras_ref):
  variables = keras_port.load_keras_weights(MODEL["b0"], str(keras_ref / "b0_notop.h5"))
  images = np.load(keras_ref / "images.npy")
  full = jax.jit(models.get_model(MODEL["b0"], include_top=False).apply)(variables, images)
  half_model = models.get_model(MODEL["b0"], include_top=False, dtype=jnp.bfloat16)
  half = jax.jit(half_model.apply)(variables, images)  # op by op, bfloat16 is slow on CPU
  assert half.dtype == jnp.float32
  params = jax.eval_shape(half_model.init, jax.random.PRNGKey(0), images[:1])["params"]
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert relative_error(half, np.asarray(full)) < 0.05


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
  with pytest.raises(UserError, match="^--model=cnn: expected one of convnext-base, .*efficientnetv2-b0, "):
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
  merged, summary = init_from.merge(fresh, ported, models.get_spec(MODEL["b0"]).head, False, str(out))
  assert summary["head_reinitialised"] == ["head_dense", "predictions"]
  np.testing.assert_array_equal(merged["params"]["stem_conv"]["kernel"],
                                direct["params"]["stem_conv"]["kernel"])
  np.testing.assert_array_equal(merged["params"]["predictions"]["kernel"],
                                fresh["params"]["predictions"]["kernel"])
  with pytest.raises(UserError, match="missing .*head_dense"):
    init_from.merge(fresh, ported, models.get_spec(MODEL["b0"]).head, True, str(out))
  with pytest.raises(UserError, match="holds efficientnetv2-b0 weights"):
    init_from.load_variables(str(out), MODEL["s"])


def test_download_from_a_server_that_never_answers_stops_with_the_same_advice(tmp_path):
  with socket.socket() as server:  # accepts connections (the backlog) and never replies
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^--download: no file from 127.0.0.1 \(.*timed out"
                       r".*\)\. On a machine with network access, fetch .* --keras_weights="):
      keras_port.download_keras_weights(
          MODEL["s"], include_top=False, stall_seconds=1.0, cache_dir=str(tmp_path),
          mirror=f"http://127.0.0.1:{server.getsockname()[1]}/weights/")
    assert time.monotonic() - started < 10
    assert not os.listdir(tmp_path)  # no partial file left


def test_download_without_network_fails_at_once_with_a_way_out(tmp_path):
  started = time.monotonic()
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.weights.keras_port",
                           "--download", f"--out={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, env=subprocess_env(
                              BLOODCELL_JAX_KERAS_WEIGHTS_URL="https://127.0.0.1:9/weights/"))
  assert result.returncode == 2
  assert "no file from 127.0.0.1" in result.stderr and "--keras_weights=PATH" in result.stderr
  assert time.monotonic() - started < 60
