"""Layer-wise freezing in the train step, and staged fine-tuning chained through checkpoints."""

import json

import jax
import numpy as np
from flax import traverse_util

from bloodcell_jax import build, sharding, steps
from bloodcell_jax.weights import init_from
from configs import effnet_finetune30
from tests.conftest import run_launch

MODEL = "efficientnetv2-b0"
SIZE = 32


def finetune_config(first_n: int, frozen_bn_mode: str = "inference"):
  config = effnet_finetune30.get_config()
  config.image_size = SIZE
  config.model.name = MODEL
  config.model.frozen_bn_mode = frozen_bn_mode
  config.optim.freeze_keras_layers = first_n
  return config


def one_train_step(config):
  """(state before, state after, freeze labels) for one step on a random batch."""
  mesh = sharding.make_mesh()
  model, tx_factory, labels = build.model_and_optimizer(config, 8, 10, 10)
  state, tx = steps.create_train_state(model, tx_factory, jax.random.PRNGKey(0), SIZE, mesh)
  before = jax.tree.map(np.asarray, state)
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


def test_staged_run_chains_stages_through_best_checkpoints(tmp_path):
  run_launch(tmp_path, f"--config.model.name={MODEL}", f"--config.image_size={SIZE}",
             "--config.data.synthetic_size=96", "--config.batch_size=16",
             "--config.eval_batch_size=32", "--config.model.dense_units=16",
             "--config.stages.s1_transfer.num_epochs=1",
             "--config.stages.s2_finetune30.num_epochs=1",
             "--config.stages.s2_finetune30.optim.freeze_keras_layers=150",
             "--config.stages.s3_full.num_epochs=1",
             config="configs/effnet_staged.py", tiny=False)
  results = json.loads((tmp_path / "results.json").read_text())
  assert list(results["stages"]) == ["s1_transfer", "s2_finetune30", "s3_full"]
  stage = {name: init_from.load_variables(str(tmp_path / name), MODEL)["params"]
           for name in results["stages"]}
  s1, s2, s3 = (traverse_util.flatten_dict(stage[n], sep="/") for n in results["stages"])
  assert results["stages"]["s1_transfer"]["weights"]["from"] is None
  assert results["stages"]["s2_finetune30"]["weights"]["from"] == str(tmp_path / "s1_transfer")
  assert results["stages"]["s2_finetune30"]["weights"]["head_reinitialised"] == []
  # Stage 2 froze the first 150 Keras layers: those are exactly stage 1's best values.
  np.testing.assert_array_equal(s2["stem_conv/kernel"], s1["stem_conv/kernel"])
  assert not np.array_equal(s2["predictions/kernel"], s1["predictions/kernel"])
  # Stage 3 trains everything.
  assert not np.array_equal(s3["stem_conv/kernel"], s2["stem_conv/kernel"])
