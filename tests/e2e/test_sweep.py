"""The research workflow end to end: a sweep run, rerun, killed and resumed in parallel; its
table with an ensemble row; predict over several runs; the reports in headless Chromium."""

import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bloodcell_jax.results import predictions
from bloodcell_jax.training import run_files
from helpers import ROOT
from helpers.browser import needs_chromium, open_page
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e

# Two seeds of one tiny CNN (a group, so the table gains an ensemble row) and a run that
# fails once its data is loaded.
SWEEP_FILE = """
from bloodcell_jax.sweep import hyper
from configs import default

def get_config():
  config = default.get_config()
  config.num_epochs = 2
  config.image_size = 32
  config.batch_size = 16
  config.eval_batch_size = 32
  config.data.synthetic_size = 96
  config.model.filters = (8, 8, 16, 16)
  config.model.dense_units = 16
  config.train.log_every_steps = 4
  config.eval.tta = "flips"
  return config

def get_sweep():
  return {**hyper.with_seeds({"tiny": {}}, 2), "too_big_batch": {"batch_size": 4096}}
"""
RUNS = ("tiny.seed0", "tiny.seed1", "too_big_batch")


def run_sweep(sweep_file, workdir, *flags, check_rc=None):
  result = subprocess.run(
      [sys.executable, "-m", "bloodcell_jax.sweep", f"--config={sweep_file}",
       f"--workdir={workdir}", *flags], cwd=ROOT, capture_output=True, text=True, timeout=900,
      env=subprocess_env())
  if check_rc is not None:
    assert result.returncode == check_rc, result.stdout + result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("sweep_file") / "tiny_sweep.py"
  path.write_text(SWEEP_FILE)
  return str(path)


@pytest.fixture(scope="module")
def sequential(sweep_file, tmp_path_factory):
  """(directory, CompletedProcess) of the sweep run once, one run after the other."""
  workdir = str(tmp_path_factory.mktemp("sequential"))
  return workdir, run_sweep(sweep_file, workdir, check_rc=1)


def read_results(workdir, run):
  return run_files.read_json(os.path.join(workdir, run, run_files.RESULTS))


def test_sweep_records_each_run_continues_past_a_failure_and_writes_the_table(sequential):
  workdir, result = sequential
  assert "[2] too_big_batch: FAILED" in result.stdout
  assert "config.batch_size=4096: larger than the training set" in result.stdout
  failure = run_files.read_json(os.path.join(workdir, "too_big_batch", "failure.json"))
  assert failure["error"].startswith("config.batch_size=4096: larger than the training set")
  for seed, run in enumerate(RUNS[:2]):
    record = read_results(workdir, run)["sweep"]
    assert (record["name"], record["run"], record["group"]) == ("tiny_sweep", run, "tiny")
    assert record["overrides"] == {"seed": seed}

  runs = [read_results(workdir, run) for run in RUNS[:2]]
  table = list(csv.DictReader(open(os.path.join(workdir, "table.csv"))))
  assert [row["run_group"] for row in table] == ["tiny", "tiny (ensemble of 2)"]
  mean = np.mean([r["val_accuracy"] for r in runs])
  assert float(table[0]["val_accuracy_mean"]) == pytest.approx(mean, abs=1e-5)
  assert float(table[0]["val_accuracy_std"]) == pytest.approx(
      np.std([r["val_accuracy"] for r in runs], ddof=1), abs=1e-5)
  assert float(table[0]["val_accuracy_tta_mean"]) == pytest.approx(
      np.mean([r["val_accuracy_tta"] for r in runs]), abs=1e-5)
  # The ensemble's accuracy is that of the runs' averaged validation probabilities.
  read = [predictions.read_probabilities(os.path.join(workdir, run, "predictions", "val.csv"))
          for run in RUNS[:2]]
  assert read[0][0] == read[1][0]  # the same images: the split does not follow the seed
  averaged = (read[0][2] + read[1][2]) / 2
  assert float(table[1]["val_accuracy_mean"]) == pytest.approx(
      np.mean(averaged.argmax(1) == read[0][1]), abs=1e-6)
  markdown = open(os.path.join(workdir, "table.md")).read()
  assert "| tiny | 2 | " in markdown and " ± " in markdown and "**" in markdown

  printed = subprocess.run([sys.executable, "-m", "bloodcell_jax.table", workdir], cwd=ROOT,
                           capture_output=True, text=True, check=True, env=subprocess_env())
  assert printed.stdout == markdown


def test_rerun_skips_finished_runs_retries_failed_ones_and_index_is_the_listed_run(
    sequential, sweep_file):
  workdir, _ = sequential
  listed = run_sweep(sweep_file, workdir, "--list", check_rc=0).stdout.splitlines()[1:]
  assert [line.split()[:3] for line in listed] == [
      ["0", "tiny.seed0", "finished"], ["1", "tiny.seed1", "finished"],
      ["2", "too_big_batch", "failed"]]
  assert "error: config.batch_size=4096" in listed[2]
  finished_at = [os.path.getmtime(os.path.join(workdir, r, run_files.RESULTS)) for r in RUNS[:2]]

  again = run_sweep(sweep_file, workdir, check_rc=1)
  assert "[0] tiny.seed0: finished, skipped" in again.stdout
  assert "[1] tiny.seed1: finished, skipped" in again.stdout
  assert "[2] too_big_batch: FAILED" in again.stdout  # retried
  assert [os.path.getmtime(os.path.join(workdir, r, run_files.RESULTS))
          for r in RUNS[:2]] == finished_at

  chosen = run_sweep(sweep_file, workdir, "--index=1", check_rc=0)
  assert chosen.stdout.splitlines()[0] == "run 1: tiny.seed1 (finished)"
  assert listed[1].split()[1] == "tiny.seed1"
  # An override on the command line makes other configs: no run is finished under them.
  relisted = run_sweep(sweep_file, workdir, "--list", "--config.num_epochs=4", check_rc=0)
  assert [line.split()[2] for line in relisted.stdout.splitlines()[1:]] == [
      "interrupted", "interrupted", "failed"]


def test_parallel_sweep_killed_midway_resumes_to_the_sequential_results(
    sequential, sweep_file, tmp_path):
  sequential_dir, _ = sequential
  workdir = str(tmp_path / "parallel")
  # A checkpoint every step leaves a window to kill a run in (and changes no result).
  every_step = "--config.train.checkpoint_every_steps=1"
  process = subprocess.Popen(
      [sys.executable, "-m", "bloodcell_jax.sweep", f"--config={sweep_file}",
       f"--workdir={workdir}", "--parallel=2", every_step], cwd=ROOT, env=subprocess_env(),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
  checkpoints = os.path.join(workdir, "tiny.seed1", run_files.CHECKPOINTS_DIR, "latest")
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
      break
    time.sleep(0.05)
  os.killpg(process.pid, signal.SIGKILL)  # the sweep and its runs, as a lost machine would
  process.wait()
  assert not os.path.exists(os.path.join(workdir, "tiny.seed1", run_files.RESULTS))

  resumed = run_sweep(sweep_file, workdir, "--parallel=2", every_step, check_rc=1)
  assert "on cores" in resumed.stdout
  log = open(os.path.join(workdir, "tiny.seed1", "train.log")).read()
  assert "resumed from" in log
  for run in RUNS[:2]:
    got, want = read_results(workdir, run), read_results(sequential_dir, run)
    for key in ("val_accuracy", "val_loss", "augmented_val_accuracy", "val_accuracy_tta",
                "temperature", "steps"):
      assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (run, key)


def test_predict_averages_runs_with_tta_and_temperature(sequential, tmp_path):
  workdir, _ = sequential
  from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top
  runs = [os.path.join(workdir, r) for r in RUNS[:2]]
  images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  npz = str(tmp_path / "images.npz")
  np.savez(npz, images=images, labels=np.zeros(5, np.int64))
  out = str(tmp_path / "ensemble.csv")
  subprocess.run([sys.executable, "-m", "bloodcell_jax.predict", f"--workdir={runs[0]}",
                  f"--workdir={runs[1]}", f"--input={npz}", f"--output={out}", "--tta=flips",
                  "--calibrated"], cwd=ROOT, check=True, capture_output=True,
                 env=subprocess_env())
  _, _, ensemble, _ = predictions.read_probabilities(out)
  each = []
  for run in runs:
    _, _, model, state, _ = inference.load_run(run)
    calibrated = inference.predict(model, state, images, 8, "flips",
                                   inference.run_temperature(run))
    plain = inference.predict(model, state, images, 8, "flips")
    np.testing.assert_array_equal(calibrated.argmax(1), plain.argmax(1))
    assert not np.allclose(calibrated, plain, atol=1e-4)  # the temperature is not 1
    each.append(calibrated)
  np.testing.assert_allclose(ensemble, np.mean(each, axis=0), atol=2e-6)


@pytest.mark.browser
@needs_chromium
def test_run_and_sweep_reports_render_in_headless_chromium(sequential):
  workdir, _ = sequential
  run_page = open_page(os.path.join(workdir, "tiny.seed0", "report.html"),
                       screenshot=os.path.join(workdir, "tiny.seed0", "report.png"))
  assert run_page["console_errors"] == []
  assert all(image["complete"] and image["width"] > 0 for image in run_page["images"])
  alts = {image["alt"] for image in run_page["images"]}
  assert {"training curves", "confusion matrix validation", "reliability diagram",
          "augmentation preview"} <= alts
  # The worst errors, each (32 pixels) beside its Grad-CAM map.
  thumbnails = [i for i in run_page["images"] if i["width"] == 64]
  assert thumbnails and len(thumbnails) <= 24
  assert "Selective prediction" in run_page["text"] and "Out-of-distribution" in run_page["text"]
  per_class = next(t for t in run_page["tables"] if t[0] == ["class", "precision", "recall",
                                                             "F1", "support"])
  assert len(per_class) == 1 + 8 + 1  # header, the 8 classes, the macro average
  assert "Temperature scaling fitted on" in run_page["text"]
  assert os.path.getsize(os.path.join(workdir, "tiny.seed0", "report.png")) > 20_000

  sweep_page = open_page(os.path.join(workdir, "report.html"),
                         screenshot=os.path.join(workdir, "report.png"))
  assert sweep_page["console_errors"] == []
  results_table = sweep_page["tables"][0]
  assert [row[0] for row in results_table[1:]] == ["tiny", "tiny (ensemble of 2)"]
  assert any("±" in cell for cell in results_table[1])
  chart = [i for i in sweep_page["images"] if i["alt"] == "val_accuracy by run group"]
  assert chart and chart[0]["complete"] and chart[0]["width"] > 300
  assert "tiny.seed0/report.html" in sweep_page["links"]
  assert "failed: config.batch_size=4096" in sweep_page["text"]
