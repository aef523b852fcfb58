"""Convolutions forward and both gradients: XLA:CPU's own against oneDNN's (models/onednn.py)
and against layers.Conv's choice of the CPU kernels (models/winograd.py: F(4x4) in C++ for wide
3x3 stride-1 convolutions, else oneDNN's).

  python benchmarks/onednn.py [--repeats=7] [--dtype=float32|bfloat16]

Prints one JSON object per line: {"bench": "onednn_conv", "shape": [N, H, W, C_in], "kernel",
"out", "stride", "dtype", "impl", "forward_ms", "input_gradient_ms", "kernel_gradient_ms",
"total_ms"} ("impl": "xla", "onednn", "cpu_kernels"), then {"bench": "onednn_conv", "summary":
...} with each shape's total speed-up of oneDNN and of the CPU kernels over XLA.
Each figure is the median of --repeats calls of a jitted function after two warm-up calls. The
shapes are the custom CNN's and EfficientNetV2-S's (stem, Fused-MBConv, a 1x1 of the MBConv
stages) at 96x96, batch 64.
"""

import argparse
import json

import step_setup  # pylint: disable=g-bad-import-order  (puts the project on sys.path)

from bloodcell_jax import runtime  # pylint: disable=g-bad-import-order

runtime.set_up()
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from jax import lax  # pylint: disable=g-import-not-at-top

from bloodcell_jax.models import native, onednn, winograd  # pylint: disable=g-import-not-at-top

SHAPES = (  # (N, H, W, C_in, k, C_out, stride)
    (64, 96, 96, 3, 3, 32, 1), (64, 48, 48, 32, 3, 64, 1), (64, 24, 24, 64, 3, 128, 1),
    (64, 12, 12, 128, 3, 256, 1),  # the CNN
    (64, 96, 96, 3, 3, 24, 2), (64, 48, 48, 24, 3, 24, 1), (64, 48, 48, 24, 3, 96, 2),
    (64, 24, 24, 48, 3, 192, 1), (64, 12, 12, 64, 3, 256, 1), (64, 6, 6, 160, 1, 960, 1),
)
IMPLS = {"xla": lax.conv_general_dilated, "onednn": onednn.conv_general_dilated,
         "cpu_kernels": winograd.conv_general_dilated}
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def programs(conv, stride):
  def forward(x, kernel):
    return conv(x, kernel, (stride, stride), "SAME", dimension_numbers=DIMENSIONS)
  input_gradient = lambda x, kernel, g: jax.vjp(lambda x: forward(x, kernel), x)[1](g)[0]
  kernel_gradient = lambda x, kernel, g: jax.vjp(lambda k: forward(x, k), kernel)[1](g)[0]
  return jax.jit(forward), jax.jit(input_gradient), jax.jit(kernel_gradient)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  args = parser.parse_args(argv)
  if not native.library():
    raise SystemExit("the CPU kernels are not available here (see the warning above)")
  dtype, rng, summary = jnp.dtype(args.dtype), np.random.default_rng(0), {}
  for n, h, w, c, k, out, stride in SHAPES:
    x = jnp.asarray(rng.normal(size=(n, h, w, c)), dtype)
    kernel = jnp.asarray(rng.normal(size=(k, k, c, out)) / (k * k * c) ** 0.5, dtype)
    g = jnp.asarray(rng.normal(size=(n, -(-h // stride), -(-w // stride), out)), dtype)
    totals = {}
    for impl, conv in IMPLS.items():
      forward, input_gradient, kernel_gradient = programs(conv, stride)
      record = {"bench": "onednn_conv", "shape": [n, h, w, c], "kernel": k, "out": out,
                "stride": stride, "dtype": args.dtype, "impl": impl,
                "forward_ms": step_setup.median_ms(forward, (x, kernel), args.repeats),
                "input_gradient_ms": step_setup.median_ms(input_gradient, (x, kernel, g),
                                                          args.repeats),
                "kernel_gradient_ms": step_setup.median_ms(kernel_gradient, (x, kernel, g),
                                                           args.repeats)}
      record["total_ms"] = totals[impl] = sum(record[f"{part}_ms"] for part in
                                              ("forward", "input_gradient", "kernel_gradient"))
      print(json.dumps({key: round(v, 2) if isinstance(v, float) else v
                        for key, v in record.items()}), flush=True)
    summary[f"{n}x{h}x{w}x{c} k{k} to {out} s{stride}"] = [
        round(totals["xla"] / totals[impl], 2) for impl in ("onednn", "cpu_kernels")]
  print(json.dumps({"bench": "onednn_conv", "dtype": args.dtype,
                    "summary": "xla_ms / onednn_ms, xla_ms / cpu_kernels_ms per shape",
                    "speedup": summary}))


if __name__ == "__main__":
  main()
