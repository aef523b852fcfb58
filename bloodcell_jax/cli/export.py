"""`bloodcell-export`: a trained run to TensorFlow SavedModel, ONNX or LiteRT, checked against JAX.

  bloodcell-export --workdir=DIR --format=saved_model|onnx|tflite --out=PATH [--ema]
      [--tta=flips|d4] [--calibrated] [--tflite_weights=float32|float16|int8]

Formats, routes and metadata: bloodcell_jax/export/writer.py.
"""

import logging as python_logging
import shlex

from absl import flags, logging

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

FORMATS = ("saved_model", "onnx", "tflite")
TFLITE_WEIGHTS = ("float32", "float16", "int8")

flags.DEFINE_string("workdir", None, "The training run to export.")
flags.DEFINE_enum("format", None, FORMATS, "What to write.")
flags.DEFINE_string("out", None, "Where: a directory for saved_model, else a file (.onnx or "
                    ".tflite).")
flags.DEFINE_bool("ema", False, "Export the moving average of the weights.")
flags.DEFINE_string("tta", "", "Bake test-time augmentation into the model: a view set of "
                    "bloodcell_jax/evaluation/tta.py, 'flips' (4 views) or 'd4' (8).")
flags.DEFINE_bool("calibrated", False, "Divide the logits by the temperature fitted on the "
                  "run's validation set.")
flags.DEFINE_enum("tflite_weights", "float32", TFLITE_WEIGHTS, "LiteRT weights: float32, "
                  "float16 (half the size), or int8 (dynamic-range quantisation, a quarter).")


def main(argv):
  del argv
  args = flags.FLAGS
  from bloodcell_jax.evaluation import tta  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.export import runtimes, writer  # pylint: disable=g-import-not-at-top
  for name in ("workdir", "format", "out"):
    if not args[name].value:
      raise UserError(f"--{name} is required")
  if args.tta:
    tta.VIEWS.get(args.tta, "--tta")
  out = writer.check_out(args.out, args.format, args.workdir)
  logging.set_verbosity(logging.WARNING)  # the SavedModel writer logs each file it writes
  python_logging.getLogger("tf2onnx").setLevel(python_logging.WARNING)
  exportable = writer.run_exportable(args.workdir, args.ema, args.tta, args.calibrated)
  metadata = writer.export(exportable, args.format, out, args.tflite_weights)
  difference = writer.check_equal_to_jax(exportable, out,
                                         writer.TOLERANCE[metadata["tflite_weights"]])
  print(f"wrote {out} ({runtimes.size_bytes(out) / 2**20:.1f} MiB): {metadata['model']}, "
        f"{len(metadata['class_names'])} classes, uint8 input [N, {exportable.image_size}, "
        f"{exportable.image_size}, 3]; max |difference| to JAX {difference:.1e}\n"
        f"weights: {metadata['checkpoint']['described']}\n"
        f"check it on images: bloodcell-predict {shlex.quote('--model=' + out)} --input=PATH")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
