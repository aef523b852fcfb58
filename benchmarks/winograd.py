"""The custom CNN's blocks (3x3 convolution + 2x2 max pooling): the convolution and the
pooling against Winograd's F(2x2, 3x3) and F(4x4, 3x3) with the pooling in their output
transforms, those by XLA's fusions and in C++.

  python benchmarks/winograd.py [--repeats=7] [--batch=64] [--forward_batch=256]

Prints one JSON object per line: {"bench": "winograd", "shape": [N, H, W, C_in], "out",
"pass" ("forward", or "train": the output and both gradients for a fixed random output
gradient), "impl" ("convolution": the convolution, oneDNN's where the CPU kernels run
(models/native.py) else XLA's, then max_pool_2x2; "winograd_f2_xla", "winograd_f4_xla": the
transforms by XLA's fusions; "winograd_f2_cpp", "winograd_f4_cpp": in C++, where the kernels
run), "ms" (the median of --repeats jitted calls after two warm-up calls), "output_difference"
(the largest absolute difference from the convolution's output, over its largest value) and,
for "train", "gradient_difference" (the relative L2 difference of each gradient from the
convolution's, the larger).
A window whose two largest outputs are within rounding of each other can send its gradient to a
different position than the convolution's: a few such windows per batch make the gradients' largest
differences much larger than their L2 ones. The shapes are the CNN's second to fourth blocks at
96x96; "train" at --batch (the training batch), "forward" at --forward_batch (predict's).
"""

import argparse
import json

import step_setup  # pylint: disable=g-bad-import-order  (puts the project on sys.path)

from bloodcell_jax import runtime  # pylint: disable=g-bad-import-order

runtime.set_up()
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from bloodcell_jax.models import native, pooling, winograd  # pylint: disable=g-import-not-at-top

BLOCKS = ((48, 32, 64), (24, 64, 128), (12, 128, 256))  # (H = W, C_in, C_out)
# pylint: disable=protected-access
IMPLS = {"convolution": pooling._unfused,
         "winograd_f2_xla": winograd._BY_BLOCK[2], "winograd_f4_xla": winograd._BY_BLOCK[4]}
if native.in_use():
  IMPLS.update(winograd_f2_cpp=winograd._NATIVE_BY_BLOCK[2],
               winograd_f4_cpp=winograd._NATIVE_BY_BLOCK[4])
# pylint: enable=protected-access


def passes(conv):
  forward = jax.jit(lambda x, kernel, g: (conv(x, kernel),))
  train = jax.jit(lambda x, kernel, g: (lambda y, vjp: (y, *vjp(g)))(*jax.vjp(conv, x, kernel)))
  return {"forward": forward, "train": train}


def differences(ours, reference):
  output = float(jnp.abs(ours[0] - reference[0]).max() / jnp.abs(reference[0]).max())
  found = {"output_difference": float(f"{output:.2g}")}
  if len(ours) > 1:
    l2 = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
             for a, b in zip(ours[1:], reference[1:]))
    found["gradient_difference"] = float(f"{l2:.2g}")
  return found


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--forward_batch", type=int, default=256)
  args = parser.parse_args(argv)
  for size, channels, out in BLOCKS:
    for name, batch in (("forward", args.forward_batch), ("train", args.batch)):
      keys = jax.random.split(jax.random.PRNGKey(0), 3)
      x = jax.random.normal(keys[0], (batch, size, size, channels))
      kernel = jax.random.normal(keys[1], (3, 3, channels, out)) / (3 * channels ** 0.5)
      g = jax.random.normal(keys[2], (batch, size // 2, size // 2, out))
      reference = None
      for impl, conv in IMPLS.items():
        fn = passes(conv)[name]
        outputs = fn(x, kernel, g)
        reference = reference or outputs
        print(json.dumps({"bench": "winograd", "shape": [batch, size, size, channels],
                          "out": out, "pass": name, "impl": impl,
                          "ms": round(step_setup.median_ms(fn, (x, kernel, g), args.repeats), 1),
                          **differences(outputs, reference)}), flush=True)


if __name__ == "__main__":
  main()
