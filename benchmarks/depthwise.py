"""Depthwise 3x3 convolution, forward + backward: XLA's grouped convolution against bloodcell_jax's.

  python benchmarks/depthwise.py [--repeats=10] [--impl=bloodcell_jax]

Prints one JSON object per line: {"bench": "depthwise", "shape": [N, H, W, C],
"stride", "impl", "fwd_bwd_ms"}. One timed call is a jitted function that
returns the output and both gradients (input and kernel) for a fixed random
output gradient; the median of --repeats calls after two warm-up calls. The
shapes are EfficientNetV2's depthwise layers at 96x96 input, batch 64, plus an
EfficientNet-B0-style early layer.
"""

import argparse
import json

import step_setup  # pylint: disable=g-bad-import-order  (puts the project on sys.path)

from bloodcell_jax import runtime  # pylint: disable=g-bad-import-order

runtime.set_up()
import jax  # pylint: disable=g-import-not-at-top
from jax import lax  # pylint: disable=g-import-not-at-top

from bloodcell_jax.models.depthwise import depthwise_conv2d  # pylint: disable=g-import-not-at-top

SHAPES = (  # (N, H, W, C, stride, k): EfficientNetV2-S, ConvNeXt-Small, MobileNetV3-Small at 96x96
    (64, 12, 12, 256, 2, 3), (64, 6, 6, 512, 1, 3), (64, 6, 6, 768, 1, 3), (64, 6, 6, 960, 1, 3),
    (64, 6, 6, 960, 2, 3), (64, 3, 3, 1536, 1, 3), (64, 24, 24, 96, 1, 3), (64, 48, 48, 32, 1, 3),
    (64, 12, 12, 240, 2, 3),
    (64, 24, 24, 96, 1, 7), (64, 12, 12, 192, 1, 7), (64, 6, 6, 384, 1, 7), (64, 3, 3, 768, 1, 7),
    (64, 48, 48, 16, 2, 3), (64, 24, 24, 72, 2, 3), (64, 12, 12, 96, 2, 5), (64, 6, 6, 240, 1, 5),
    (64, 6, 6, 288, 2, 5), (64, 3, 3, 576, 1, 5),
)


def lax_grouped(x, kernel, stride):
  return lax.conv_general_dilated(x, kernel[:, :, None, :], (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1])


IMPLS = {"lax_grouped": lax_grouped, "bloodcell_jax": depthwise_conv2d}


def fwd_bwd_fn(conv, stride):
  def run(x, kernel, g):
    y, vjp = jax.vjp(lambda x, kernel: conv(x, kernel, stride), x, kernel)
    return y, vjp(g)
  return jax.jit(run)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--impl", choices=tuple(IMPLS), default=None, help="default: both")
  args = parser.parse_args(argv)
  impls = [args.impl] if args.impl else list(IMPLS)
  for n, h, w, c, stride, k in SHAPES:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (n, h, w, c))
    kernel = jax.random.normal(keys[1], (k, k, c))
    g = jax.random.normal(keys[2], (n, -(-h // stride), -(-w // stride), c))
    for impl in impls:
      ms = step_setup.median_ms(fwd_bwd_fn(IMPLS[impl], stride), (x, kernel, g), args.repeats)
      print(json.dumps({"bench": "depthwise", "shape": [n, h, w, c], "stride": stride, "k": k,
                        "impl": impl, "fwd_bwd_ms": round(ms, 2)}), flush=True)


if __name__ == "__main__":
  main()
