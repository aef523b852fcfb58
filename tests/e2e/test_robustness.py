"""The robustness program on a trained run: accuracy per shift and severity, its table and
grid, BatchNorm adaptation, and its errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bloodcell_jax.training import run_files
from helpers import ROOT
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e


def test_robustness_command_on_a_tiny_run(trained_run, tmp_path):
  workdir, _ = trained_run
  out = tmp_path / "robust.json"
  names = ["dimmer", "defocus", "stain", "jpeg", "zoom_out", "cut_edge"]
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.robustness",
                           f"--workdir={workdir}", f"--out={out}", f"--shifts={','.join(names)}"],
                          cwd=ROOT, capture_output=True, text=True, env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(out.read_text())
  # Clean, it is the run's own validation accuracy of its best checkpoint.
  run_results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  assert results["clean"] == run_results["val_accuracy"]
  assert list(results["shifts"]) == names
  assert all(list(v) == ["1", "2", "3", "4", "5"] and all(0 <= a <= 1 for a in v.values())
             for v in results["shifts"].values())
  per_shift = {n: np.mean(list(v.values())) for n, v in results["shifts"].items()}
  assert results["mean_corruption_accuracy"] == pytest.approx(np.mean(list(per_shift.values())))
  assert results["worst_shift"] == min(per_shift, key=per_shift.get)
  assert set(results["per_family"]) == {"illumination", "focus", "colour", "compression",
                                        "magnification", "occlusion"}
  table = (tmp_path / "robust.md").read_text()
  assert "| defocus | focus |" in table and "mean corruption accuracy" in result.stdout
  assert (tmp_path / "robust_grid.png").stat().st_size > 10000

  # Two runs are measured on their averaged probabilities: the same run twice is that run.
  pair = tmp_path / "pair.json"
  subprocess.run([sys.executable, "-m", "bloodcell_jax.robustness", f"--workdir={workdir}",
                  f"--workdir={workdir}", f"--out={pair}", "--shifts=defocus,jpeg"], cwd=ROOT,
                 check=True, capture_output=True, env=subprocess_env())
  averaged = json.loads(pair.read_text())
  assert averaged["shifts"] == {n: results["shifts"][n] for n in ("defocus", "jpeg")}
  assert averaged["workdirs"] == [os.path.abspath(workdir)] * 2

  adapted = tmp_path / "adapted.json"
  subprocess.run([sys.executable, "-m", "bloodcell_jax.robustness", f"--workdir={workdir}",
                  f"--out={adapted}", "--shifts=dimmer", "--adapt_bn"], cwd=ROOT, check=True,
                 capture_output=True, env=subprocess_env())
  assert json.loads(adapted.read_text())["adapt_bn"] is True


def test_unknown_shift_is_a_one_line_error(trained_run):
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.robustness",
                           f"--workdir={trained_run[0]}", "--shifts=defocus,warp"], cwd=ROOT,
                          capture_output=True, text=True, env=subprocess_env())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --shifts='warp': unknown shift (known: brighter, ")


def test_several_runs_need_an_out_file(trained_run):
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.robustness",
                           f"--workdir={trained_run[0]}", f"--workdir={trained_run[0]}",
                           "--shifts=defocus"], cwd=ROOT, capture_output=True, text=True,
                          env=subprocess_env())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --out: required with several --workdir runs (the results are those of their "
      "average, not of one run's workdir)")
