import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.training import freezing, losses, optim, param_rules
from configs import default


def test_weighted_cross_entropy_matches_keras_class_weight_formula():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 0.0]])
  labels = jnp.array([0, 2, 1])
  weights = jnp.array([1.0, 2.0, 0.5])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  expected = jnp.mean(ce * weights[labels])
  got = losses.weighted_cross_entropy(logits, labels, num_classes=3, class_weights=weights)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  masked = losses.weighted_cross_entropy(logits, labels, num_classes=3,
                                         mask=jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(masked, ce[:2].mean(), rtol=1e-6)


def test_label_smoothing_and_soft_labels():
  logits = jnp.array([[2.0, 0.0]])
  smoothed = losses.weighted_cross_entropy(logits, jnp.array([0]), num_classes=2,
                                           label_smoothing=0.2)
  soft = losses.weighted_cross_entropy(logits, jnp.array([[0.9, 0.1]]), num_classes=2)
  np.testing.assert_allclose(smoothed, soft, rtol=1e-6)


def test_weight_penalty_follows_its_rules_multipliers():
  params = {"conv0": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(3)},
            "dense": {"kernel": jnp.array([-1.0, 1.0])}}
  np.testing.assert_allclose(losses.weight_penalty(params, l2=0.5), 0.5 * (16.0 + 2.0))
  np.testing.assert_allclose(
      losses.weight_penalty(params, l1=1.0, rules=[("dense/.*", 3.0), (".*", 0.0)]), 6.0)


def test_rules_first_match_wins_in_either_form_and_must_cover_every_parameter():
  params = {"conv0": {"kernel": 0, "bias": 0}, "dense": {"kernel": 0}}
  freeze = param_rules.choice("train", "freeze")
  expected = {"conv0": {"kernel": "freeze", "bias": "train"}, "dense": {"kernel": "train"}}
  for rules in ([("conv0/bias", "train"), ("conv0/.*", "freeze"), (".*", "train")],
                ["conv0/bias=train", "conv0/.*=freeze", ".*=train"]):
    parsed = param_rules.parse(rules, "x", freeze)
    assert param_rules.resolve(params, parsed, "x") == expected
  # A regex with a quantifier's comma (the old comma-joined string could not hold one).
  parsed = param_rules.parse(["conv{1}0/.{1,4}=freeze", ".*=train"], "x", freeze)
  assert param_rules.resolve(params, parsed, "x")["conv0"] == {"kernel": "train", "bias": "freeze"}
  assert param_rules.resolve(params, [], "x", default="train") == {
      "conv0": {"kernel": "train", "bias": "train"}, "dense": {"kernel": "train"}}
  with pytest.raises(UserError, match=r"^config.optim.freeze: no rule matches parameter "
                     r"'dense/kernel'; end the list with a catch-all"):
    param_rules.resolve(params, param_rules.parse([("conv0/.*", "freeze")], "y", freeze),
                        "config.optim.freeze")
  with pytest.raises(UserError, match="rule 'conv0' should be 'regex=value'"):
    param_rules.parse(["conv0"], "config.optim.freeze", freeze)
  with pytest.raises(UserError, match="expected one of train, freeze"):
    param_rules.parse([("conv0", "thaw")], "config.optim.freeze", freeze)
  with pytest.raises(UserError, match="expected a number >= 0"):
    param_rules.parse([("conv0", -1.0)], "config.optim.lr_multipliers", param_rules.multiplier)


def test_per_parameter_weight_decay_and_learning_rate_multipliers():
  params = {"a": {"kernel": jnp.ones(2)}, "b": {"kernel": jnp.ones(2)}, "c": {"bias": jnp.ones(2)}}
  config = optim_config(name="adamw", learning_rate=0.1, weight_decay=0.5,
                        weight_decay_rules=[("a/.*", 2.0), (".*kernel", 1.0), (".*", 0.0)],
                        lr_multipliers=[("b/.*", 0.1), (".*", 1.0)])
  tx, _ = optim.make_optimizer(config, params, 1, 10)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradients: Adam's step is 0, so the update is -lr * mult * decay * factor * w.
  np.testing.assert_allclose(updates["a"]["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(updates["b"]["kernel"], -0.1 * 0.1 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(updates["c"]["bias"], 0.0)
  reference = optax.adamw(0.1, weight_decay=0.5)
  grads = jax.tree.map(lambda p: p * 0.3, params)
  same = optim.make_optimizer(optim_config(name="adamw", learning_rate=0.1, weight_decay=0.5,
                                           weight_decay_rules=()), params, 1, 10)[0]
  got = same.update(grads, same.init(params), params)[0]["c"]["bias"]
  want = reference.update(grads, reference.init(params), params)[0]["c"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def optim_config(**overrides):
  config = default.get_config().optim
  config.unlock()
  config.update(overrides)
  return config


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "lion"])
def test_frozen_parameters_get_no_update_and_no_decay(name):
  params = {"frozen": {"kernel": jnp.ones((3,))}, "head": {"kernel": jnp.ones((3,))}}
  config = default.get_config()
  config.optim.update(name=name, freeze=["frozen/.*=freeze", ".*=train"],
                      weight_decay=0.0 if name == "adam" else 0.1)
  tx, _ = optim.make_optimizer(config.optim, params, steps_per_epoch=10, total_steps=100,
                               freeze_labels=freezing.freeze_labels(config, params))
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params["frozen"]["kernel"], 1.0)
  assert not np.allclose(params["head"]["kernel"], 1.0)


def test_schedules():
  warm = optim.learning_rate_schedule(optim_config(schedule="warmup_cosine",
                                                   learning_rate=1.0, warmup_epochs=1.0),
                                      steps_per_epoch=10, total_steps=100)
  assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1.0)
  assert float(warm(100)) == pytest.approx(0.0, abs=1e-6)
  step = optim.learning_rate_schedule(optim_config(schedule="step", learning_rate=1.0,
                                                   step_decay_epochs="2,4"), 10, 100)
  assert [float(step(s)) for s in (19, 21, 41)] == pytest.approx([1.0, 0.1, 0.01])


def test_gradient_clipping_bounds_the_first_sgd_step():
  params = {"w": jnp.zeros(4)}
  tx, _ = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, learning_rate=1.0,
                                            grad_clip_norm=1.0), params, 1, 1)
  updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
  np.testing.assert_allclose(jnp.linalg.norm(updates["w"]), 1.0, rtol=1e-5)


def test_bad_optimizer_settings_are_user_errors():
  params = {"w": jnp.zeros(2)}
  with pytest.raises(UserError, match="config.optim.name='rmsprop'"):
    optim.make_optimizer(optim_config(name="rmsprop"), params, 1, 1)
  assert isinstance(optim_config(), ml_collections.ConfigDict)


def test_jensen_shannon_is_zero_for_agreeing_views_and_matches_its_formula():
  same = jnp.tile(jnp.array([[[1.0, -2.0, 0.5]]]), (4, 3, 1))
  np.testing.assert_allclose(losses.jensen_shannon(same), 0.0, atol=1e-7)
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 3, 4))
  p = np.asarray(jax.nn.softmax(logits))
  m = p.mean(axis=1, keepdims=True)
  expected = (p * (np.log(p) - np.log(m))).sum(-1).mean()
  np.testing.assert_allclose(losses.jensen_shannon(logits), expected, rtol=1e-5)
  mask = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(losses.jensen_shannon(logits, mask),
                             (p * (np.log(p) - np.log(m))).sum(-1).mean(-1)[:2].mean(),
                             rtol=1e-5)
