"""The Keras weight port's program: a checkpoint that init_from loads, and a download without
network that fails at once."""

import subprocess
import sys
import time

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
