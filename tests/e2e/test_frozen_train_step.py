"""Layer-wise freezing in a whole EfficientNetV2-B0 train step: frozen layers get no update
and their BatchNorm runs in inference mode, or keeps training statistics if asked."""

import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from bloodcell_jax.training import model_and_optimizer, sharding, steps
from configs import effnet_finetune30

pytestmark = pytest.mark.e2e

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
  model, tx_factory, labels = model_and_optimizer.build(config, 8, 10, 10)
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
