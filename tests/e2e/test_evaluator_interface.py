"""The evaluator interface: an evaluator defined and registered here, named in config.evals, runs
after training and every N epochs, and its declared metric reaches results.json, the metrics
log, the results table and the run report with no change to library code."""

import json

import numpy as np
import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation.evaluators import EVALUATORS, Evaluator, Metric
from bloodcell_jax.training import run_files
from helpers import runs

pytestmark = pytest.mark.e2e


@EVALUATORS.register("test-mean-confidence")
class MeanConfidence(Evaluator):
  """The mean probability of the predicted class on a set: a metric the library lacks."""
  options = {"set": "val"}

  def metrics(self):
    return [Metric(f"{self.name}_confidence", "mean confidence (outside)", kind="value",
                   section="Outside evaluators")]

  def __call__(self, context):
    log_probs, _ = context.outputs_of(self.opts["set"])
    return {f"{context.prefix}{self.name}_confidence": float(np.exp(log_probs.max(1)).mean())}


def tiny_config():
  config = runs.tiny_cnn_config()
  config.evals.confidence = dict(type="test-mean-confidence", every_epochs=1)
  return config


def test_an_evaluator_registered_outside_the_library_reaches_every_output(tmp_path):
  from bloodcell_jax.results import report, table  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.trainer import entry  # pylint: disable=g-import-not-at-top  (TensorFlow)
  workdir = tmp_path / "run"
  results = entry.train(tiny_config(), str(workdir))
  confidence = results["confidence_confidence"]
  assert 0.125 <= confidence <= 1.0  # 8 classes: a maximum probability is at least 1/8
  recorded = json.loads((workdir / run_files.RESULTS).read_text())
  assert recorded["confidence_confidence"] == confidence
  assert {"key": "confidence_confidence", "title": "mean confidence (outside)",
          "kind": "value", "section": "Outside evaluators", "table": True,
          "predictions": ""} in recorded["metrics"]
  # every_epochs=1: once per epoch during training, in the metrics log.
  logged = [json.loads(line) for line in (workdir / run_files.METRICS).read_text().splitlines()]
  assert sum("confidence_confidence" in record for record in logged) == 2

  built = table.write(str(tmp_path))
  assert "mean confidence (outside)" in [c.title for c in built.columns]
  assert "mean confidence (outside)" in (tmp_path / "table.md").read_text()
  assert "confidence_confidence_mean" in (tmp_path / "table.csv").read_text()
  page = (workdir / run_files.REPORT).read_text()
  assert "<h2>Outside evaluators</h2>" in page and "mean confidence (outside)" in page
  assert report.write_run_report(str(workdir)) == str(workdir / run_files.REPORT)


def test_an_unknown_evaluator_or_option_is_one_line_before_any_data_is_read():
  from bloodcell_jax.config import schema  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.evals.confidence.type = "nope"
  with pytest.raises(UserError, match=r"^config.evals.confidence.type='nope': unknown "
                     r"evaluator \(known: classification, calibration, robustness, .*"
                     r"test-mean-confidence"):
    schema.validate(config)
  config = tiny_config()
  with config.unlocked():
    config.evals.val.sett = "val"
  with pytest.raises(UserError, match=r"^config.evals.val.sett: not an option of the "
                     r"classification evaluator \(its options: type, every_epochs, set, "
                     r"augment, tta\)"):
    schema.validate(config)
