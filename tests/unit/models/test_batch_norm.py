import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bloodcell_jax.models.batch_norm import BatchNorm, column_sums


def float64_sums(x):
  return np.asarray(x, np.float64).reshape(-1, x.shape[-1]).sum(0)


@pytest.mark.parametrize("shape", [(64, 48, 48, 32), (6, 7, 5, 1280), (3, 5, 5, 24)])
def test_column_sums_are_as_precise_as_xla_reductions(shape):
  # Rows a power of two apart, a prime count and many channels: each takes a different grouping.
  x = jax.random.normal(jax.random.PRNGKey(0), shape) + 3.0  # a mean far from 0 needs care
  x2d = x.reshape(-1, shape[-1])
  exact = float64_sums(x)
  ours = np.abs(np.asarray(jax.jit(column_sums)(x2d)) - exact).max()
  xla = np.abs(np.asarray(jax.jit(lambda a: a.sum(0))(x2d)) - exact).max()
  assert ours <= max(2 * xla, 1e-6 * np.abs(exact).max())


def train_step_outputs(module, x, g, params):
  """(y, updated batch statistics, d<y, g>/dparams, d<y, g>/dx), jitted."""
  stats = module.init(jax.random.PRNGKey(0), x)["batch_stats"]

  def loss(params, x):
    y, updates = module.apply({"params": params, "batch_stats": stats}, x,
                              mutable=["batch_stats"])
    return jnp.sum(y * g), (y, updates["batch_stats"])
  (_, (y, new_stats)), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
  return y, new_stats, grads[0], grads[1]


@pytest.mark.parametrize("product_gradient", [True, False])
@pytest.mark.parametrize("shape", [(16, 12, 12, 32), (8, 3, 3, 256)])
def test_training_mode_matches_flax(shape, product_gradient):
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  x = 2.0 * jax.random.normal(keys[0], shape) + 0.7
  g = jax.random.normal(keys[1], shape)
  c = shape[-1]
  params = {"scale": jnp.linspace(0.5, 1.5, c), "bias": jnp.linspace(-1.0, 1.0, c)}
  kwargs = dict(use_running_average=False, momentum=0.9, epsilon=1e-3)
  ours = train_step_outputs(BatchNorm(**kwargs, product_gradient=product_gradient), x, g, params)
  theirs = train_step_outputs(nn.BatchNorm(**kwargs), x, g, params)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * float(jnp.max(jnp.abs(b))))


def test_variables_and_inference_mode_match_flax():
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 5, 5, 8))
  ours = BatchNorm(use_running_average=True, epsilon=1e-3)
  theirs = nn.BatchNorm(use_running_average=True, epsilon=1e-3)
  variables = theirs.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree.map(jnp.shape, variables)
  variables = jax.tree.map(lambda v: v + jnp.arange(v.size) * 0.1, variables)  # not the defaults
  np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), atol=1e-6)


def test_float64_parameters_keep_float64_statistics():
  with jax.enable_x64():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 3, 2)))
    module = BatchNorm(use_running_average=False, dtype=jnp.float64, param_dtype=jnp.float64,
                       force_float32_reductions=False)
    variables = module.init(jax.random.PRNGKey(0), x)
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    assert y.dtype == jnp.float64
    assert updates["batch_stats"]["mean"].dtype == jnp.float64
    np.testing.assert_allclose(y.reshape(-1, 2).mean(0), 0.0, atol=1e-12)
