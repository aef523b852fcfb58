"""Layer-wise freezing in the train step, and staged fine-tuning chained through checkpoints."""

import functools
import json

import jax
import numpy as np
from flax import traverse_util
from PIL import Image

from bloodcell_jax.augment import shifts
from bloodcell_jax.data import synthetic
from bloodcell_jax.training import model_and_optimizer as build
from bloodcell_jax.training import run_files, sharding, steps
from bloodcell_jax.weights import init_from
from configs import effnet_finetune30, effnet_staged
from helpers.runs import run_launch

MODEL = "efficientnetv2-b0"
SIZE = 32


def finetune_config(first_n: int, frozen_bn_mode: str = "inference"):
  config = effnet_finetune30.get_config()
  config.image_size = SIZE
  config.model.name = MODEL
  config.init.frozen_bn_mode = frozen_bn_mode
  config.optim.freeze_keras_layers = first_n
  return config


def host_initial_state(model, tx):
  """A train state with variables drawn on the host: what matters here is which of them a
  step moves, and initialising B0 in JAX compiles for 13 s."""
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return np.ones(leaf.shape, leaf.dtype)
    if name in ("bias", "mean"):
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = np.prod(leaf.shape[:-1])
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
  params, batch_stats = jax.tree_util.tree_map_with_path(draw, jax.eval_shape(
      functools.partial(steps.init_variables, model, image_size=SIZE), jax.random.PRNGKey(0)))
  return steps.TrainState(step=np.zeros((), np.int32), params=params, batch_stats=batch_stats,
                          opt_state=jax.tree.map(np.asarray, jax.jit(tx.init)(params)),
                          rng=np.asarray(jax.random.PRNGKey(1)))


def one_train_step(config):
  """(state before, state after, freeze labels) for one step on a random batch."""
  mesh = sharding.make_mesh()
  model, tx_factory, labels = build.model_and_optimizer(config, 8, 10, 10)
  tx = tx_factory(steps.param_shapes(model, SIZE))
  before = host_initial_state(model, tx)
  state = jax.device_put(before, sharding.replicated(mesh))
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32),
           "label": rng.integers(0, 8, 8)}
  step = steps.jit_train_step(mesh, model=model, tx=tx, loss_config=steps.LossConfig(8),
                              learning_rate_fn=lambda s: 1e-3)
  after, _ = step(state, sharding.global_batch(batch, mesh))
  return before, jax.tree.map(np.asarray, after), traverse_util.flatten_dict(labels, sep="/")


def changed(before, after):
  flat_before = traverse_util.flatten_dict(before, sep="/")
  flat_after = traverse_util.flatten_dict(after, sep="/")
  return {p: not np.array_equal(flat_before[p], flat_after[p]) for p in flat_before}


def test_frozen_layers_get_no_update_and_their_batchnorm_runs_in_inference_mode():
  before, after, labels = one_train_step(finetune_config(first_n=100))
  moved = changed(before.params, after.params)
  frozen = [p for p, v in labels.items() if v == "freeze"]
  trainable = [p for p, v in labels.items() if v == "train"]
  assert len(frozen) > 50 and len(trainable) > 50
  assert not any(moved[p] for p in frozen)
  assert sum(moved[p] for p in trainable) > 0.9 * len(trainable)
  stats = changed(before.batch_stats, after.batch_stats)
  frozen_bn = {p.rsplit("/", 1)[0] for p in frozen if p.endswith("/scale")}
  assert frozen_bn and not any(v for p, v in stats.items() if p.rsplit("/", 1)[0] in frozen_bn)
  assert all(v for p, v in stats.items() if p.rsplit("/", 1)[0] not in frozen_bn)


def test_frozen_batchnorm_can_keep_training_statistics():
  before, after, labels = one_train_step(finetune_config(first_n=100, frozen_bn_mode="train"))
  assert all(changed(before.batch_stats, after.batch_stats).values())
  moved = changed(before.params, after.params)
  assert not any(moved[p] for p, v in labels.items() if v == "freeze")


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


def test_effnet_staged_recipe_is_the_study_sequence():
  config = effnet_staged.get_config()
  assert sorted(config.stages) == ["s1_transfer", "s2_finetune30", "s3_full"]
  transfer, finetune, full = (config.stages[n] for n in sorted(config.stages))
  assert transfer.optim.freeze[-1] == (".*", "freeze") and not transfer.optim.freeze_keras_layers
  assert not finetune.optim.freeze and finetune.optim.freeze_keras_layers == 480
  assert not full.optim.freeze and full.optim.freeze_keras_layers == 0
  assert "brightness" in full.augment.train and "brightness" not in transfer.augment.train


def write_lab_folder(root, per_class: int, seed: int):
  """A few labelled 'new lab' images: the synthetic cells with another stain, per class."""
  data = synthetic.generate(per_class * 8 * 3, SIZE, seed=seed)
  root.mkdir()
  for c, name in enumerate(data.class_names):
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
  lab = write_lab_folder(tmp_path / "lab", per_class=2, seed=5)
  held_out = write_lab_folder(tmp_path / "held_out", per_class=1, seed=6)
  workdir = tmp_path / "adapted"
  result = run_launch(workdir, f"--config.data.train={lab}", f"--config.data.test={held_out}",
                      "--config.num_epochs=3", config=f"configs/adapt.py:{source}", tiny=False)
  assert "no validation set" in result.stderr
  results = json.loads((workdir / run_files.RESULTS).read_text())
  assert results["val_accuracy"] is None and results["num_val"] == 0
  assert (results["num_train"], results["num_test"]) == (16, 8)
  assert results["test_accuracy"] is not None and results["steps"] == results["best_step"] == 3
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
