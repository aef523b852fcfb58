import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bloodcell_jax.models import layers, native, pooling, winograd
from helpers import skip_or_fail_without_the_kernels

NHWC = ("NHWC", "HWIO", "NHWC")
# (x shape, output channels): odd sizes, sizes that are not whole blocks, and channel counts
# below, at and above the transforms' 16 lanes, not multiples of them.
SHAPES = [((2, 7, 9, 3), 5), ((1, 8, 10, 16), 16), ((2, 9, 6, 20), 18), ((1, 2, 3, 2), 33)]


@pytest.mark.parametrize("block", [2, 4])
def test_winograd_in_cpp_matches_the_convolution_then_the_pooling(block):
  skip_or_fail_without_the_kernels()
  rng = np.random.default_rng(block)
  native_block = jax.jit(lambda x, k: winograd._NATIVE_BY_BLOCK[block](x, k))  # pylint: disable=protected-access
  reference = jax.jit(pooling._unfused)  # pylint: disable=protected-access
  for shape, out in SHAPES:
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, shape[3], out)), jnp.float32)
    y, vjp = jax.vjp(native_block, x, kernel)
    expected, expected_vjp = jax.vjp(reference, x, kernel)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for got, wanted in zip((y, *vjp(g)), (expected, *expected_vjp(g))):
      assert got.shape == wanted.shape
      scale = float(jnp.abs(wanted).max())
      np.testing.assert_allclose(got, wanted, rtol=0, atol=1e-5 * scale, err_msg=str(shape))


def test_the_cnn_blocks_from_32_channels_take_winograd_in_cpp(monkeypatch):
  skip_or_fail_without_the_kernels()
  x, kernel = jnp.ones((1, 8, 8, 32)), jnp.ones((3, 3, 32, 4))
  for train in (True, False):
    assert pooling.cpu_method(x.shape, 3, train) == "winograd_f4"
    loss = lambda x, train=train: pooling.conv_max_pool(x, kernel, train).sum()
    text = jax.jit(jax.grad(loss)).lower(x).as_text()
    for transform in ("input", "output_max", "output_max_grad", "input_grad"):
      assert f"bloodcell_jax_winograd_{transform}" in text
  assert pooling.cpu_method((1, 8, 8, 16), 3, True) == "unfused"  # oneDNN's convolution
  monkeypatch.setattr(native, "in_use", lambda: False)  # XLA's fusions for the transforms
  assert "bloodcell_jax_winograd" not in jax.jit(winograd.conv_max_pool).lower(
      x, kernel).as_text()


def test_a_machine_that_cannot_build_them_is_told_why(monkeypatch, tmp_path):
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  with pytest.raises(native.Unavailable, match="no C[+][+] compiler .*no-such-compiler"):
    native._build()  # pylint: disable=protected-access
  monkeypatch.delenv("CXX")
  monkeypatch.setattr(native, "_onednn_root", lambda: str(tmp_path))  # no headers there
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  with pytest.raises(native.Unavailable, match="could not build .*onednn_conv.cc:.*dnnl"):
    native._build()  # pylint: disable=protected-access
  monkeypatch.setenv("BLOODCELL_JAX_CPU_KERNELS", "off")
  with pytest.raises(native.Unavailable, match="BLOODCELL_JAX_CPU_KERNELS=off"):
    native._build()  # pylint: disable=protected-access


def test_wide_3x3_convolutions_take_winograd_in_cpp_with_the_same_results():
  """layers.Conv (every model but the CNN): 3x3, stride 1, "SAME", 32 or more channels in and
  64 or more out; odd sizes and sizes that are not whole 4x4 blocks."""
  skip_or_fail_without_the_kernels()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 10, 32)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 32, 65)), jnp.float32)
  conv = layers.Conv(65, (3, 3), padding="SAME", use_bias=False)
  ours = lambda x, k: conv.apply({"params": {"kernel": k}}, x)
  reference = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                    dimension_numbers=NHWC)
  g = jnp.asarray(rng.normal(size=(2, 7, 10, 65)), jnp.float32)
  both = lambda f: jax.jit(lambda x, k: (lambda y, vjp: (y, *vjp(g)))(*jax.vjp(f, x, k)))
  text = both(ours).lower(x, kernel).as_text()
  assert "bloodcell_jax_winograd_output_grad" in text and "onednn" not in text
  for got, wanted in zip(both(ours)(x, kernel), both(reference)(x, kernel)):
    np.testing.assert_allclose(got, wanted, rtol=0, atol=1e-5 * float(jnp.abs(wanted).max()))
  # Narrow, strided or bfloat16 convolutions go to oneDNN.
  for shape, strides, dtype in (((3, 3, 16, 65), 1, jnp.float32),
                                ((3, 3, 32, 32), 1, jnp.float32),
                                ((3, 3, 32, 65), 2, jnp.float32),
                                ((3, 3, 32, 65), 1, jnp.bfloat16)):
    conv = layers.Conv(shape[3], (3, 3), strides, padding="SAME", use_bias=False)
    text = jax.jit(lambda x, k, conv=conv: conv.apply({"params": {"kernel": k}}, x)).lower(
        x[..., :shape[2]].astype(dtype), jnp.ones(shape, dtype)).as_text()
    assert "onednn" in text and "winograd" not in text, (shape, strides, dtype)
