"""Damaged and lost checkpoints, workdirs that hold another run, and workdirs that cannot be
made: a run goes on from what is intact, or stops in one line having changed nothing."""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from bloodcell_jax.export import writer
from bloodcell_jax.training import checkpoint, run_files
from bloodcell_jax.weights import init_from
from helpers import ROOT
from helpers.checkpoints import final_state, finished_steps
from helpers.images import write_image_folder
from helpers.runs import TRAINED_RUN_OVERRIDES, run_launch, subprocess_env

pytestmark = pytest.mark.e2e

NEWEST = 216  # the trained run's last step


def largest_array_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def truncate_half(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def assert_states_equal(workdir_a, workdir_b):
  (step_a, state_a), (step_b, state_b) = final_state(workdir_a), final_state(workdir_b)
  assert step_a == step_b
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)


def file_digests(root):
  return {os.path.relpath(os.path.join(d, f), root):
          hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
          for d, _, files in os.walk(root) for f in files}


def test_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_before_it(trained_run,
                                                                                tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run[0], workdir)
  damaged = largest_array_file(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest",
                                            str(NEWEST)))
  truncate_half(damaged)
  damaged_size = os.path.getsize(damaged)

  log = run_launch(workdir, *TRAINED_RUN_OVERRIDES).stderr

  assert f"checkpoints/latest/{NEWEST} is unreadable (ValueError: OUT_OF_RANGE: " in log
  assert "Traceback" not in log and "Exception ignored" not in log  # the warning alone
  assert f"resumed from {workdir} at step {NEWEST - 3}" in log
  aside = os.path.join(workdir, run_files.CHECKPOINTS_DIR, "corrupt", "latest", str(NEWEST))
  kept = os.path.join(aside, os.path.relpath(
      damaged, os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest", str(NEWEST))))
  assert os.path.getsize(kept) == damaged_size  # set aside as it was, not deleted
  # The steps after the intact checkpoint are trained again, to the same state.
  assert_states_equal(trained_run[0], workdir)


def run_program(module, *flags):
  return subprocess.run([sys.executable, "-m", f"bloodcell_jax.{module}", *flags], cwd=ROOT,
                        capture_output=True, text=True, env=subprocess_env())


def test_unreadable_best_checkpoint_falls_back_and_every_program_says_so(trained_run,
                                                                         tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run[0], workdir)
  best = glob.glob(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "best", "[0-9]*"))[0]
  best_step = int(os.path.basename(best))
  open(os.path.join(best, "state", "_METADATA"), "w").close()
  before = file_digests(workdir)

  variables = init_from.load_variables(workdir, "cnn")
  exportable = writer.run_exportable(workdir)
  images = write_image_folder(str(tmp_path / "images"), images_per_class=1, size=32)
  predicted = run_program("predict", f"--workdir={workdir}", f"--input={images}",
                          f"--output={tmp_path / 'preds.csv'}")

  newest, step = checkpoint.restore_raw_state(
      os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest"))
  jax.tree.map(np.testing.assert_array_equal, variables["params"], newest["params"])
  said = f"latest checkpoint, step {step} (best/{best_step} unreadable)"
  assert predicted.returncode == 0 and predicted.stdout.strip().endswith(f"; weights: {said}")
  record = exportable.metadata["checkpoint"]
  assert (exportable.metadata["weights"], record["described"]) == ("latest checkpoint", said)
  logged = [json.loads(line) for line in open(os.path.join(workdir, run_files.METRICS))]
  assert record["val_accuracy"] == next(r["val_accuracy"] for r in logged
                                        if r.get("step") == step and "val_accuracy" in r)
  assert file_digests(workdir) == before  # reading never moves anything


def test_outputs_that_would_replace_inputs_or_each_other_are_refused(trained_run, tmp_path):
  data = tmp_path / "cells.npz"
  np.savez(data, images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(2, np.int64))
  kept = data.read_bytes()
  into_input = run_program("predict", f"--workdir={trained_run[0]}", f"--input={data}",
                           f"--output={data}")
  same_stem = run_program("robustness", f"--workdir={trained_run[0]}", "--shifts=jpeg",
                          f"--out={tmp_path / 'rob.md'}")
  unfinished = tmp_path / "unfinished"
  shutil.copytree(trained_run[0], unfinished, ignore=shutil.ignore_patterns(
      run_files.RESULTS, run_files.REPORT))
  report = run_program("report", f"--workdir={unfinished}")

  assert [r.returncode for r in (into_input, same_stem, report)] == [2, 2, 2]
  assert into_input.stderr.strip().splitlines()[-1] == (
      f"error: --output={data}: is --input={data}; writing it would replace the input: "
      "choose another path")
  assert data.read_bytes() == kept
  assert same_stem.stderr.strip().splitlines()[-1].startswith(
      f"error: --out={tmp_path / 'rob.md'}: the JSON results; expected a name ending in .json")
  assert report.stderr.strip().splitlines()[-1] == (
      f"error: --workdir={unfinished}: no results.json; the run has not finished")
  assert not (unfinished / run_files.REPORT).exists()


def test_rerun_with_another_model_or_data_is_refused_and_changes_nothing(trained_run,
                                                                         tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run[0], workdir)
  before = file_digests(workdir)

  result = run_launch(workdir, *TRAINED_RUN_OVERRIDES, "--config.image_size=24",
                      "--config.data.synthetic_size=160", check=False)

  assert result.returncode == 2
  error = result.stderr.strip().splitlines()[-1]
  assert error.startswith(f"error: --workdir={workdir}: holds a run of another model")
  assert "image_size: 32 -> 24" in error and "train images" in error
  assert file_digests(workdir) == before


def test_a_workdir_that_cannot_be_made_is_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  workdir = str(blocker / "run")  # a path through a file: no directory can be made there
  result = run_launch(workdir, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --workdir={workdir}: cannot create it (Not a directory)")


@pytest.mark.parametrize("override, message", [
    ("--config.batch_size=-16", "config.batch_size=-16: expected an integer >= 1"),
    ("--config.image_size=0", "config.image_size=0: expected an integer >= 16"),
    ("--config.num_epochs=abc", "--config.num_epochs=abc: invalid literal for int()"),
    ("--config.train.early_stopping_metric=val_acc",
     "config.train.early_stopping_metric='val_acc': expected one of val_accuracy, "),
    ("--config.train.ema_decay=1.5", "config.train.ema_decay=1.5: expected a number in [0.0, "
     "1.0)"),
    ("--config=configs/nope.py", "--config=configs/nope.py: no such config file"),
])
def test_bad_config_values_stop_before_any_data_is_read(tmp_path, override, message):
  workdir = str(tmp_path / "run")
  result = run_launch(workdir, override, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
  assert "Traceback" not in result.stderr and not os.path.exists(workdir)


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
  result = run_launch(str(tmp_path / "run"), "--config.batch_size=512", check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: config.batch_size=512: larger than the training set (288 images); expected at "
      "most 288")


def test_predict_into_a_missing_directory_fails_before_predicting(trained_run, tmp_path):
  output = str(tmp_path / "no_such_dir" / "preds.csv")
  result = subprocess.run(
      [sys.executable, "-m", "bloodcell_jax.predict", f"--workdir={trained_run[0]}",
       f"--input={trained_run[0]}", f"--output={output}"], cwd=ROOT, capture_output=True,
      text=True, env=subprocess_env())
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --output={output}: no such directory {tmp_path / 'no_such_dir'}")


@pytest.fixture
def small_disk(tmp_path):
  """A 1 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
  mount_point = tmp_path / "disk"
  mount_point.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                           capture_output=True, check=False)
  if mounted.returncode:
    pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
  yield mount_point
  subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_stops_before_the_checkpoint_that_does_not_fit(small_disk):
  workdir = str(small_disk / "run")
  overrides = ("--config.num_epochs=2", "--config.train.checkpoint_every_steps=4")

  full = run_launch(workdir, *overrides, check=False)

  assert full.returncode == 2 and "Traceback" not in full.stderr
  error = full.stderr.strip().splitlines()[-1]
  assert re.fullmatch(rf"error: {workdir}/checkpoints: no space for the next checkpoint \(.* "
                      r"MiB free, about .* MiB needed\); the newest complete checkpoint \(step "
                      r"(\d+)\) is kept: free some space and rerun the same command to resume",
                      error), error
  kept = int(re.search(r"\(step (\d+)\)", error).group(1))
  assert finished_steps(workdir)[-1] == kept
  assert final_state(workdir)[0] == kept  # complete: it restores, so a rerun resumes there
  assert not glob.glob(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "*", "*tmp*"))
