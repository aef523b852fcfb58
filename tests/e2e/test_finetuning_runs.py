"""Staged fine-tuning chained through checkpoints, and the few-shot adaptation recipe, as
runs of launch.py."""

import json
import re

import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from bloodcell_jax.augment import shifts
from bloodcell_jax.data import synthetic
from bloodcell_jax.training import run_files
from bloodcell_jax.weights import init_from
from helpers.runs import run_launch

pytestmark = pytest.mark.e2e

SIZE = 32

STAGED_CONFIG = """
from configs import cnn


def get_config():
  config = cnn.get_config()
  config.stages.s1_head = dict(num_epochs=1,
                               optim=dict(freeze=[("logits/.*", "train"), (".*", "freeze")]))
  config.stages.s2_top = dict(num_epochs=1, optim=dict(freeze=["conv0/.*=freeze", ".*=train"]))
  config.stages.s3_all = dict(num_epochs=1, optim=dict(freeze=()))
  return config
"""

def test_staged_run_chains_stages_through_best_checkpoints(tmp_path):
  config_file = tmp_path / "staged.py"
  config_file.write_text(STAGED_CONFIG)
  workdir = tmp_path / "run"
  run_launch(workdir, config=str(config_file))
  results = json.loads((workdir / run_files.RESULTS).read_text())
  names = ["s1_head", "s2_top", "s3_all"]
  assert list(results["stages"]) == names
  assert results["val_accuracy"] == results["stages"]["s3_all"]["val_accuracy"]
  params = {n: traverse_util.flatten_dict(
      init_from.load_variables(str(workdir / n), "cnn")["params"], sep="/") for n in names}
  weights = {n: results["stages"][n]["weights"] for n in names}
  assert weights["s1_head"]["from"] is None
  assert weights["s2_top"]["from"] == str(workdir / "s1_head")
  assert weights["s2_top"]["head_reinitialised"] == []  # later stages keep the head
  # Each stage starts from the previous best: what a stage froze is exactly that.
  np.testing.assert_array_equal(params["s2_top"]["conv0/kernel"],
                                params["s1_head"]["conv0/kernel"])
  assert not np.array_equal(params["s2_top"]["conv1/kernel"], params["s1_head"]["conv1/kernel"])
  assert not np.array_equal(params["s3_all"]["conv0/kernel"], params["s2_top"]["conv0/kernel"])


def write_lab_folder(root, per_class: int, seed: int, skip=()):
  """A few labelled 'new lab' images: the synthetic cells with another stain, per class but
  those in `skip`."""
  data = synthetic.generate(per_class * 8 * 3, SIZE, seed=seed)
  root.mkdir()
  for c, name in enumerate(data.class_names):
    if name in skip:
      continue
    (root / name).mkdir()
    chosen = np.flatnonzero(data.labels == c)[:per_class]
    for i in chosen:
      shifted = shifts.apply("stain", data.images[i:i + 1], 0.6,
                             np.full((1, 6), 0.9, np.float32)).numpy()[0]
      Image.fromarray(shifted.astype(np.uint8)).save(root / name / f"{i}.png")
  return root


def test_few_shot_adaptation_recipe_starts_from_the_run_and_needs_no_validation(trained_run,
                                                                                tmp_path):
  source, _ = trained_run
  # A lab that labels white cells only: no platelets or erythroblasts in its folders.
  white_cells_only = ("erythroblast", "platelet")
  lab = write_lab_folder(tmp_path / "lab", per_class=3, seed=5, skip=white_cells_only)
  held_out = write_lab_folder(tmp_path / "held_out", per_class=1, seed=6, skip=white_cells_only)
  workdir = tmp_path / "adapted"
  result = run_launch(workdir, f"--config.data.train={lab}", f"--config.data.test={held_out}",
                      "--config.num_epochs=3", config=f"configs/adapt.py:{source}", tiny=False)
  assert "no validation set" in result.stderr
  results = json.loads((workdir / run_files.RESULTS).read_text())
  assert results["val_accuracy"] is None and results["num_val"] == 0
  assert (results["num_train"], results["num_test"]) == (18, 6)
  # The adapted run keeps every class of the run it started from, in its order.
  manifest = json.loads((workdir / run_files.SPLIT_MANIFEST).read_text())
  assert manifest["class_names"] == json.loads(
      open(f"{source}/{run_files.SPLIT_MANIFEST}").read())["class_names"]
  assert results["test_accuracy"] is not None
  assert results["steps"] == results["best_step"] == 6  # 3 epochs of 2 steps
  assert results["weights"]["from"] == source and results["weights"]["head_reinitialised"] == []
  config = json.loads((workdir / run_files.CONFIG).read_text())
  assert config["model"] == json.loads(open(f"{source}/config.json").read())["model"]
  assert config["init"] == {"weights": source, "head": "keep", "frozen_bn_mode": "inference"}

  missing = run_launch(tmp_path / "other", config="configs/adapt.py:/no/such/run", tiny=False,
                       check=False)
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines()[-1] == (
      "error: --config=configs/adapt.py:/no/such/run: /no/such/run/config.json: missing; after "
      "':' name a training run's workdir")


def test_unlabelled_adaptation_self_trains_on_confident_cells_under_the_guard(trained_run,
                                                                             tmp_path):
  source, _ = trained_run
  white_cells = ("basophil", "eosinophil", "ig", "lymphocyte", "monocyte", "neutrophil")
  lab = write_lab_folder(tmp_path / "lab", per_class=3, seed=5,
                         skip=("erythroblast", "platelet"))
  workdir = tmp_path / "self_trained"
  result = run_launch(workdir, f"--config.self_training.unlabelled={lab}",
                      f"--config.self_training.classes={white_cells}",
                      "--config.self_training.min_confidence=0.2",
                      "--config.optim.learning_rate=0.01",  # large: some epochs may fall
                      config=f"configs/adapt_unlabelled.py:{source}", tiny=False)
  results = json.loads((workdir / run_files.RESULTS).read_text())
  picked = results["self_training"]
  assert picked["num_images"] == 18 and 1 <= picked["num_pseudo_labelled"] <= 18
  assert set(picked["per_class"]) <= set(white_cells)
  assert sum(picked["per_class"].values()) == picked["num_pseudo_labelled"]
  manifest = json.loads((workdir / run_files.SPLIT_MANIFEST).read_text())
  assert len(manifest["pseudo_labelled"]["ids"]) == picked["num_pseudo_labelled"]
  assert results["num_train"] == (len(manifest["train"]["ids"])
                                  + picked["repeats"] * picked["num_pseudo_labelled"])
  # The guard measured the run's own validation images with its own weights first...
  guard = results["guard"]
  source_results = json.loads(open(f"{source}/{run_files.RESULTS}").read())
  assert guard["start_val_accuracy"] == pytest.approx(source_results["val_accuracy"])
  assert manifest["val"] == json.loads(open(f"{source}/{run_files.SPLIT_MANIFEST}").read())["val"]
  # ...and the result is the newest epoch within a point of it, or the starting weights.
  epochs = {int(e): (int(s), float(a)) for e, s, a in re.findall(
      r"epoch (\d+) step (\d+): val_accuracy ([\d.]+)", result.stderr)}
  assert sorted(epochs) == [1, 2, 3]
  below = [e for e, (_, accuracy) in sorted(epochs.items()) if accuracy < guard["floor"] - 1e-4]
  assert guard["rejected_epochs"] == below
  kept = [e for e in epochs if e not in below]
  assert results["best_step"] == (epochs[max(kept)][0] if kept else 0)
  assert results["val_accuracy"] == pytest.approx(
      epochs[max(kept)][1] if kept else guard["start_val_accuracy"], abs=1e-4)
