"""The model interface: a model defined and registered outside the library
(helpers/tiny_model.py) goes through training, both kinds of freezing, frozen BatchNorm, staged
restarts and inference with no change to library code."""

import numpy as np
import pytest

from bloodcell_jax.evaluation import inference
from helpers.tiny_model import flat_variables, tiny_config

pytestmark = pytest.mark.e2e


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
  _, class_names, model, state, _ = inference.load_run(str(tmp_path / "s3_regex"))
  images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
  probabilities = inference.predict(model, state, images, batch_size=4)
  assert probabilities.shape == (3, len(class_names))
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
