"""Another lab's labelled images, as a user measures them: the labelled_folder evaluator in a
tiny training (after training and every epoch), then predict and robustness with --classes on
that run."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from bloodcell_jax.training import run_files
from helpers import ROOT, runs
from helpers.images import write_image_folder
from helpers.runs import run_module, subprocess_env

pytestmark = pytest.mark.e2e

LAB_CLASSES = ("eosinophil", "lymphocyte", "neutrophil")


def tiny_config(lab: str):
  config = runs.tiny_cnn_config()
  config.eval.report = False
  config.evals.lab = dict(type="labelled_folder", path=lab, every_epochs=1)
  config.evals.lab_two = dict(type="labelled_folder", path=lab, classes="eosinophil,neutrophil")
  return config


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
  """(workdir, lab folder, results) of a tiny run with a labelled_folder evaluator on a
  generated folder of 3 of the 8 classes."""
  from bloodcell_jax.trainer import entry  # pylint: disable=g-import-not-at-top  (TensorFlow)
  root = tmp_path_factory.mktemp("other_labs")
  lab = write_image_folder(str(root / "lab"), images_per_class=5, size=24, classes=LAB_CLASSES)
  workdir = root / "run"
  return workdir, lab, entry.train(tiny_config(lab), str(workdir))


def test_the_evaluator_writes_both_balanced_accuracies_to_results_log_and_table(lab_run):
  from bloodcell_jax.results import table  # pylint: disable=g-import-not-at-top
  workdir, _, results = lab_run
  recorded = json.loads((workdir / run_files.RESULTS).read_text())
  for key in ("lab_balanced_accuracy", "lab_restricted_balanced_accuracy", "lab_accuracy"):
    assert 0.0 <= recorded[key] <= 1.0 and recorded[key] == results[key]
  recall = recorded["lab_per_class_recall"]
  assert sorted(recall) == sorted(recorded["lab_restricted_per_class_recall"]) == list(LAB_CLASSES)
  assert recorded["lab_balanced_accuracy"] == pytest.approx(np.mean(list(recall.values())))
  restricted = recorded["lab_restricted_per_class_recall"].values()
  assert recorded["lab_restricted_balanced_accuracy"] == pytest.approx(np.mean(list(restricted)))
  # Restricted to two of the three classes present: lymphocytes are never right.
  assert recorded["lab_two_restricted_per_class_recall"]["lymphocyte"] == 0.0
  assert {"key": "lab_restricted_balanced_accuracy", "title": "lab balanced accuracy, restricted",
          "kind": "accuracy", "section": "Other labs", "table": True,
          "predictions": ""} in recorded["metrics"]
  assert "lab_per_class_recall" not in [m["key"] for m in recorded["metrics"]]
  # every_epochs=1: in the metrics log once per epoch (2 epochs) and with the final results;
  # scalars only.
  logged = [json.loads(line) for line in (workdir / run_files.METRICS).read_text().splitlines()]
  assert sum("lab_restricted_balanced_accuracy" in record for record in logged) == 3
  assert not any("lab_per_class_recall" in record for record in logged)
  table.write(str(workdir.parent))
  text = (workdir.parent / "table.md").read_text()
  assert "lab balanced accuracy" in text and "lab balanced accuracy, restricted" in text


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_predict_restricts_every_row_to_the_classes_named(lab_run, tmp_path):
  workdir, lab, _ = lab_run
  out = tmp_path / "preds.csv"
  code, stdout, _ = run_module("bloodcell_jax.predict", f"--workdir={workdir}", f"--input={lab}",
                               f"--output={out}", "--classes=eosinophil,lymphocyte")
  assert code == 0 and "restricted to eosinophil, lymphocyte" in stdout
  rows = _rows(out)
  assert len(rows) == 15 and {r["pred_name"] for r in rows} <= {"eosinophil", "lymphocyte"}
  for row in rows:
    assert len([k for k in row if k.startswith("p_")]) == 8
    kept = float(row["p_eosinophil"]) + float(row["p_lymphocyte"])
    assert kept == pytest.approx(1.0, abs=1e-5)
    assert all(float(row[f"p_{c}"]) == 0 for c in ("basophil", "neutrophil", "platelet"))
    assert float(row["confidence"]) == max(float(row["p_eosinophil"]),
                                           float(row["p_lymphocyte"]))

  code, _, last = run_module("bloodcell_jax.predict", f"--workdir={workdir}", f"--input={lab}",
                             f"--output={tmp_path / 'bad.csv'}", "--classes=eosinophil,blast")
  assert code == 2
  assert last[0].startswith("error: --classes=eosinophil,blast: unknown class 'blast' (known: "
                            "basophil, eosinophil, ")
  assert not (tmp_path / "bad.csv").exists()


def test_robustness_on_a_folder_of_some_classes_writes_the_labelled_summary(lab_run, tmp_path):
  workdir, lab, results = lab_run
  out = tmp_path / "lab.json"
  done = subprocess.run([sys.executable, "-m", "bloodcell_jax.robustness",
                         f"--workdir={workdir}", f"--input={lab}", "--shifts=brighter",
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
                        env=subprocess_env())
  assert done.returncode == 0, done.stderr[-3000:]
  found = json.loads(out.read_text())
  summary = found["labelled_set"]
  assert summary["classes_present"] == summary["restricted_to"] == list(LAB_CLASSES)
  # The same weights and images as the evaluator of the training run.
  assert summary["balanced_accuracy"] == pytest.approx(results["lab_balanced_accuracy"])
  assert summary["restricted_balanced_accuracy"] == pytest.approx(
      results["lab_restricted_balanced_accuracy"])
  assert found["clean"] == pytest.approx(summary["accuracy"])
  assert "recall (restricted)" in done.stdout

  code, _, last = run_module("bloodcell_jax.robustness", f"--workdir={workdir}",
                             f"--input={lab}", "--shifts=brighter", "--classes=blast")
  assert code == 2 and last[0].startswith("error: --classes=blast: unknown class 'blast'")
