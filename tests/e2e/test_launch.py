"""End-to-end runs of launch.py on tiny generated data, and its error reporting."""

import csv
import glob
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from bloodcell_jax.data import synthetic
from bloodcell_jax.data.image_set import PBC_CLASS_NAMES
from bloodcell_jax.evaluation import explain, inference
from bloodcell_jax.results import predictions
from bloodcell_jax.training import run_files, steps
from helpers import ROOT
from helpers.images import write_image_folder
from helpers.runs import TRAINED_RUN_OVERRIDES, run_launch, subprocess_env

pytestmark = pytest.mark.e2e


def test_run_leaves_every_artefact(trained_run):
  workdir, result = trained_run
  results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  for key in ("val_accuracy", "augmented_val_accuracy", "test_accuracy",
              "balanced_val_accuracy", "per_class_val_accuracy", "num_train", "num_val",
              "train_seconds", "dataset"):
    assert key in results, key
  assert results["dataset"]["synthetic"] is True
  assert results["test_accuracy"] is None
  assert (results["num_train"], results["num_val"]) == (288, 32)
  assert set(results["per_class_val_accuracy"]) == set(results["class_names"])
  # When not to trust it: selective prediction, and the model `predict` flags images with.
  assert results["val_accuracy_at_80"] >= results["val_accuracy_at_95"] - 1e-9
  assert results["val_selective_rank"] == "feature_margin"
  assert 0.0 <= results["val_flagged"] <= 0.2 and os.path.isfile(os.path.join(workdir, "ood.npz"))
  assert results["ood"]["feature_score"] == "mahalanobis" and results["ood"]["knn_bank"] == 288
  assert "SYNTHETIC" in result.stderr
  assert os.path.getsize(os.path.join(workdir, "confusion_val.png")) > 1000
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  records = [json.loads(line) for line in open(os.path.join(workdir, run_files.METRICS))]
  assert any("train_loss" in r for r in records) and any("val_accuracy" in r for r in records)
  config = json.load(open(os.path.join(workdir, run_files.CONFIG)))
  assert config["image_size"] == 32 and config["model"]["filters"] == [8, 16, 16, 32]
  manifest = json.load(open(os.path.join(workdir, run_files.SPLIT_MANIFEST)))
  assert not set(manifest["train"]["ids"]) & set(manifest["val"]["ids"])
  assert len(manifest["train"]["ids"]) + len(manifest["val"]["ids"]) == 320
  assert os.listdir(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "best"))
  assert "images/s" in result.stderr and "ETA" in result.stderr
  # Every validation image's probabilities, the temperature fitted on them, its picture.
  ids, labels, probabilities, names = predictions.read_probabilities(
      os.path.join(workdir, "predictions", "val.csv"))
  assert ids == manifest["val"]["ids"] and labels.tolist() == manifest["val"]["labels"]
  assert names == results["class_names"]
  assert np.mean(probabilities.argmax(1) == labels) == pytest.approx(results["val_accuracy"])
  assert os.path.isfile(os.path.join(workdir, "predictions", "augmented_val.csv"))
  calibration = json.load(open(os.path.join(workdir, run_files.CALIBRATION)))
  assert calibration["temperature"] == results["temperature"] > 0
  assert 0 <= results["val_ece"] <= 1 and results["val_nll"] == results["val_loss"]
  assert os.path.getsize(os.path.join(workdir, "reliability_val.png")) > 1000
  assert not os.path.exists(os.path.join(workdir, "report.html"))  # config.eval.report=False


def test_tiny_cnn_learns_the_synthetic_classes(trained_run):
  workdir, _ = trained_run
  results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  assert results["val_accuracy"] >= 0.5  # chance is 0.125


def test_rerun_of_a_finished_run_only_evaluates(trained_run):
  workdir, _ = trained_run
  before = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  result = run_launch(workdir, *TRAINED_RUN_OVERRIDES, "--config.train.log_every_steps=5")
  after = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  assert "resumed" in result.stderr and "images/s" not in result.stderr
  assert after["val_accuracy"] == before["val_accuracy"]
  # Resuming under other settings is allowed, and said.
  assert "holds a run started with other settings" in result.stderr
  assert "train.log_every_steps: 4 -> 5" in result.stderr


def test_predict_writes_one_row_per_image(trained_run, tmp_path):
  workdir, _ = trained_run
  folder = write_image_folder(str(tmp_path / "imgs"), images_per_class=2, size=40,
                              classes=("x", "y"))
  cells = synthetic.generate(2, 40, seed=5).images  # like the run's (generated) training images
  for i, cell in enumerate(cells):
    Image.fromarray(cell).save(os.path.join(folder, "y", f"z_cell{i}.png"))
  out = str(tmp_path / "preds.csv")
  done = subprocess.run([sys.executable, "-m", "bloodcell_jax.predict", f"--workdir={workdir}",
                         f"--input={folder}", f"--output={out}"], cwd=ROOT, check=True,
                        capture_output=True, text=True, env=subprocess_env())
  rows = list(csv.DictReader(open(out)))
  noise = [os.path.join(c, f"{c}_{i}.png") for c in "xy" for i in range(2)]
  assert [r["id"] for r in rows] == noise + [os.path.join("y", f"z_cell{i}.png") for i in (0, 1)]
  class_names = json.load(open(os.path.join(workdir, run_files.RESULTS)))["class_names"]
  assert list(rows[0]) == ["id", "pred", "pred_name", "confidence", "ood_score", "cell_score",
                           "flag"] + [f"p_{c}" for c in class_names]
  for row in rows:
    probs = np.array([float(row[f"p_{c}"]) for c in class_names])
    assert abs(probs.sum() - 1.0) < 1e-4
    assert int(row["pred"]) == int(np.argmax(probs))
    assert row["pred_name"] == class_names[int(row["pred"])]
  # Random pixels are flagged whatever the network says; generated cells are cell images.
  flags = [r["flag"] for r in rows]
  assert "ok" not in flags[:4] and "not_a_cell" not in flags[4:]
  assert all(float(r["ood_score"]) >= 1.0 for r in rows[:4])
  assert f"flagged {sum(f != 'ok' for f in flags)} of 6 (" in done.stdout
  explained = tmp_path / "why"
  subprocess.run([sys.executable, "-m", "bloodcell_jax.predict", f"--workdir={workdir}",
                  f"--input={folder}", f"--output={out}", "--abstain", f"--explain={explained}"],
                 cwd=ROOT, check=True, capture_output=True, env=subprocess_env())
  abstained = list(csv.DictReader(open(out)))
  assert [r["pred"] == "" for r in abstained] == [f != "ok" for f in flags]
  assert sorted(os.listdir(explained)) == sorted(
      explain.png_name(r["id"], r["pred_name"]) for r in rows)

  # Adapted to these (random) images, the BatchNorm statistics and the predictions move.
  plain = np.array([[float(r[f"p_{c}"]) for c in class_names] for r in rows])
  adapted = predicted_probabilities(workdir, folder, out, "--adapt_bn")[:4]
  plain = plain[:4]
  assert adapted.shape == plain.shape and not np.allclose(adapted, plain, atol=1e-3)

  npz = str(tmp_path / "rows.npz")
  np.savez(npz, images=np.zeros((3, 32, 32, 3), np.uint8), labels=np.zeros(3, np.int64))
  subprocess.run([sys.executable, "-m", "bloodcell_jax.predict", f"--workdir={workdir}",
                  f"--input={npz}", f"--output={out}"], cwd=ROOT, check=True,
                 capture_output=True, env=subprocess_env())
  assert [r["id"] for r in csv.DictReader(open(out))] == ["0", "1", "2"]


def test_explanations_of_the_trained_model_are_not_those_of_random_weights(trained_run):
  """Adebayo et al. 2018: a map that survives randomising the weights explains nothing."""
  run = inference.load_run(trained_run[0])
  params, _ = steps.init_variables(run.model, jax.random.PRNGKey(99), run.config.image_size)
  randomised = run.state.replace(params=params)
  cells = synthetic.generate(8, run.config.image_size, seed=3)
  trained = explain.explain(run.model, run.state, cells.images, cells.labels)
  random_maps = explain.explain(run.model, randomised, cells.images, cells.labels)
  similarity = [np.corrcoef(a.ravel(), b.ravel())[0, 1] if a.std() and b.std() else 0.0
                for a, b in zip(trained, random_maps)]
  assert np.mean(similarity) < 0.5, similarity


def test_test_source_and_npz_training_data(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 40, 40, 3), dtype=np.uint8)
  labels = np.arange(64) % 8
  np.savez(tmp_path / "course.npz", images=images, labels=labels)
  folder = write_image_folder(str(tmp_path / "test"), images_per_class=1, size=32,
                              classes=PBC_CLASS_NAMES)
  workdir = str(tmp_path / "run")
  run_launch(workdir, f"--config.data.train={tmp_path / 'course.npz'}",
             f"--config.data.test={folder}", "--config.num_epochs=1",
             "--config.data.val_fraction=0.25")
  results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  assert results["num_test"] == 8 and results["test_accuracy"] is not None
  assert results["dataset"]["num_resized"] == 64
  assert os.path.exists(os.path.join(workdir, "confusion_test.png"))


@pytest.mark.parametrize("flag, message", [
    ("--config.optim.learnig_rate=0.1",
     "error: --config.optim.learnig_rate: unknown config key; closest valid keys: "
     "optim.learning_rate"),
    ("--config.data.train=/no/such/folder", "error: /no/such/folder: no such file or directory"),
    ("--config.model.name=resnet", "error: config.model.name='resnet': unknown model"),
    ("--config.augment.train=flip|twist",
     "error: config.augment.train='twist': unknown augmentation op (known: flip, "),
    ("--config.grad_accum_steps=3", "error: config.batch_size=16: expected a multiple of "
     "config.grad_accum_steps=3"),
])
def test_bad_input_is_one_error_line_and_nonzero_exit(tmp_path, flag, message):
  result = run_launch(str(tmp_path / "run"), flag, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(message)
  assert "Traceback" not in result.stderr


def test_diverging_training_stops_with_a_clear_error_and_keeps_the_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  # A sane first epoch, then a learning rate of 1e30.
  result = run_launch(workdir, "--config.optim.schedule=step",
                      "--config.optim.step_decay_epochs=1", "--config.optim.step_decay_factor=1e33",
                      "--config.loss.l2=0.0", "--config.model.norm=none", "--config.num_epochs=3",
                      check=False)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert re.match(r"error: training loss is (nan|inf) at step \d+; the last good checkpoint "
                  r"\(step 18\) is kept in .*checkpoints/latest", last), last
  manager = ocp.CheckpointManager(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "latest"),
                                  item_names=("state", "meta"))
  assert manager.all_steps() == [18]
  state = manager.restore(18, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state))
  assert not os.path.exists(os.path.join(workdir, run_files.RESULTS))


def test_early_stopping_keeps_the_best_epoch(tmp_path):
  workdir = str(tmp_path / "run")
  # With a zero learning rate nothing improves after the first epoch.
  run_launch(workdir, "--config.optim.learning_rate=0.0", "--config.num_epochs=5",
             "--config.train.early_stopping_patience=2",
             "--config.train.early_stopping_metric=val_loss")
  results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  assert results["stopped_early"] is True
  assert (results["epochs"], results["best_step"]) == (3, 18)
  assert os.listdir(os.path.join(workdir, run_files.CHECKPOINTS_DIR, "best")) == ["18"]


def test_strong_pipeline_with_mixup_and_offline_copies(tmp_path):
  workdir = str(tmp_path / "strong")
  strong = ("flip|randaugment(num_ops=2, magnitude=0.5)|augmix(severity=0.3)"
            "|random_brightness(0.2)|mixup(0.2)")
  run_launch(workdir, "--config.num_epochs=1", f"--config.augment.train={strong}",
             "--config.data.offline_copies=1")
  results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  offline = results["offline_augmentation"]
  assert offline["copies"] == 1 and offline["augmentation"] == strong.rsplit("|", 1)[0]
  assert results["num_train"] == 2 * offline["num_original"] == 2 * 288
  assert os.path.isfile(offline["cache"])


def predicted_probabilities(workdir, folder, out, *flags):
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.predict", f"--workdir={workdir}",
                           f"--input={folder}", f"--output={out}", *flags], cwd=ROOT,
                          capture_output=True, text=True, env=subprocess_env())
  if result.returncode:
    return result.stderr.strip().splitlines()[-1]
  return np.array([[float(v) for k, v in row.items() if k.startswith("p_")]
                   for row in csv.DictReader(open(out))])


def test_weight_average_gradient_accumulation_and_augmix_consistency_end_to_end(trained_run,
                                                                                 tmp_path):
  workdir = str(tmp_path / "ema")
  result = run_launch(workdir, "--config.num_epochs=1", "--config.grad_accum_steps=2",
                      "--config.train.ema_decay=0.9",
                      "--config.train.early_stopping_metric=ema_val_accuracy",
                      "--config.loss.jsd_weight=12",  # two AugMix views per image
                      "--config.augment.train=flip|augmix(severity=0.3)")
  assert "ema_val_accuracy" in result.stderr
  results = json.load(open(os.path.join(workdir, run_files.RESULTS)))
  assert np.isfinite(results["val_loss"])
  for split in ("val", "augmented_val"):
    assert 0.0 <= results[f"ema_{split}_accuracy"] <= 1.0
  folder = write_image_folder(str(tmp_path / "imgs"), images_per_class=2, size=32)
  out = str(tmp_path / "preds.csv")
  raw = predicted_probabilities(workdir, folder, out)
  averaged = predicted_probabilities(workdir, folder, out, "--ema")
  assert raw.shape == averaged.shape == (6, 8)
  assert not np.allclose(raw, averaged, atol=1e-4)
  assert predicted_probabilities(trained_run[0], folder, out, "--ema") == (
      f"error: --workdir={trained_run[0]}: its run kept no weight average "
      "(config.train.ema_decay was 0)")

