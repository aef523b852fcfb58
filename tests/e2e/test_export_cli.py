"""The export program on a trained run: `predict --model` on its file gives what
`predict --workdir` gives on the run."""

import csv
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest
from PIL import Image

from bloodcell_jax.config import recorded
from bloodcell_jax.export import runtimes, writer
from bloodcell_jax.results import predictions
from bloodcell_jax.training import run_files
from helpers.images import sixteen_cells
from helpers.runs import run_module

pytestmark = pytest.mark.e2e


def test_export_cli_and_predict_model_equal_predict_workdir(trained_run, tmp_path):
  workdir, _ = trained_run
  folder = tmp_path / "cells"
  folder.mkdir()
  for i, image in enumerate(sixteen_cells(32)):
    Image.fromarray(image).save(folder / f"{i:02d}.png")
  onnx_file = str(tmp_path / "run.onnx")
  code, stdout, _ = run_module("bloodcell_jax.export", f"--workdir={workdir}", "--format=onnx",
                               f"--out={onnx_file}", "--tta=flips", "--calibrated")
  assert code == 0 and "max |difference| to JAX" in stdout
  model = runtimes.load(onnx_file)
  results = run_files.read_json(os.path.join(workdir, run_files.RESULTS))
  with open(os.path.join(workdir, run_files.CONFIG)) as f:
    config = ml_collections.ConfigDict(recorded.upgrade_recorded(json.load(f)))
  assert model.metadata["val_accuracy"] == results["val_accuracy"]
  assert model.metadata["config_digest"] == recorded.config_digest(config)
  assert model.metadata["source_run"] == os.path.abspath(workdir)
  assert (model.metadata["tta"], model.metadata["temperature"]) == (
      "flips", run_files.read_json(os.path.join(workdir, run_files.CALIBRATION))["temperature"])

  by_model, by_run = tmp_path / "model.csv", tmp_path / "run.csv"
  assert run_module("bloodcell_jax.predict", f"--model={onnx_file}", f"--input={folder}",
                    f"--output={by_model}")[0] == 0
  assert run_module("bloodcell_jax.predict", f"--workdir={workdir}", "--tta=flips",
                    "--calibrated", f"--input={folder}", f"--output={by_run}")[0] == 0
  ids, _, got, names = predictions.read_probabilities(str(by_model))
  want_ids, _, want, want_names = predictions.read_probabilities(str(by_run))
  assert (ids, names) == (want_ids, want_names) and len(ids) == 16
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # 6 decimals in the CSVs
  # The file carries the run's out-of-distribution model: the same scores and flags.
  assert model.ood is not None and model.metadata["ood"]["feature_score"] == "mahalanobis"
  with open(by_model) as f, open(by_run) as g:
    rows, want_rows = list(csv.DictReader(f)), list(csv.DictReader(g))
  assert [r["flag"] for r in rows] == [r["flag"] for r in want_rows]
  np.testing.assert_allclose([float(r["ood_score"]) for r in rows],
                             [float(r["ood_score"]) for r in want_rows], rtol=1e-3, atol=1e-4)

  assert run_module("bloodcell_jax.predict", f"--model={onnx_file}", "--tta=d4",
                    f"--input={folder}")[2] == [
      "error: --tta: for --workdir runs; an exported model has its weights, TTA and "
      "calibration chosen at export"]


def test_a_run_trained_in_bfloat16_exports_in_float32(trained_run, tmp_path):
  """What is exported runs on other machines: it computes in float32 whatever the run did."""
  workdir, _ = trained_run
  half = str(tmp_path / "bfloat16_run")
  shutil.copytree(workdir, half)
  config_path = os.path.join(half, run_files.CONFIG)
  config = run_files.read_json(config_path)
  config["model"]["dtype"] = "bfloat16"
  with open(config_path, "w") as f:
    json.dump(config, f)
  images = np.stack(sixteen_cells(32))
  full, from_half = (writer.run_exportable(w) for w in (workdir, half))
  np.testing.assert_array_equal(
      from_half.outputs(from_half.variables, images)["probabilities"],
      full.outputs(full.variables, images)["probabilities"])
