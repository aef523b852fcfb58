"""A picture of what the augmentation does: every op at a few magnitudes, then the whole pipeline.

  bloodcell-preview --config=configs/effnet.py --out=grid.png
  bloodcell-preview --config=configs/cnn_strong.py \\
      --config.data.train=../shared/data/pbc96 --out=grid.png

Rows of the first part: one op each (RandAugment's and AugMix's ops), on one
training image, at the magnitudes of --magnitudes. Rows of the second part: the
config's `augment.train` pipeline (then `augment.eval_strong`) on one image of each
class, each row another epoch's draws: exactly what training sees.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from bloodcell_jax import runtime
from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/.",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", "augmentation_preview.png", "PNG file to write.")
_MAGNITUDES = flags.DEFINE_list("magnitudes", ["0", "0.25", "0.5", "0.75", "1"],
                                "Magnitudes of the per-op rows, in [0, 1].")
_PIPELINE_ROWS = flags.DEFINE_integer("pipeline_rows", 4, "Rows of augment.train draws.")
flags.mark_flags_as_required(["config"])


def main(argv):
  from bloodcell_jax.augment.grid import draw_grid, one_per_class, op_rows, pipeline_rows  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  runtime.keep_tensorflow_on_host()
  from bloodcell_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    magnitudes = [float(m) for m in _MAGNITUDES.value]
  except ValueError:
    raise UserError(f"--magnitudes={','.join(_MAGNITUDES.value)}: expected numbers in "
                    "[0, 1]") from None
  if not all(0.0 <= m <= 1.0 for m in magnitudes):
    raise UserError(f"--magnitudes={','.join(_MAGNITUDES.value)}: expected numbers in [0, 1]")
  data = sources.load_source(config.data.train, config.image_size,
                             class_names=tuple(config.data.class_names),
                             synthetic_size=min(config.data.synthetic_size, 200),
                             seed=config.seed)
  picks = one_per_class(data, 8)
  images, labels = data.images[picks], data.labels[picks]
  num_classes = len(data.class_names)

  rows = [("original", [images[0]], None)]
  titles = [f"m={m:g}" for m in magnitudes]
  for name, outputs in op_rows(images[0], magnitudes).items():
    rows.append((name, outputs, titles))
  class_titles = [data.class_names[label] for label in labels]
  rows.append(("originals", list(images), class_titles))
  for key, count in (("train", _PIPELINE_ROWS.value), ("eval_strong", 2)):
    spec = config.augment[key]
    for e, row in enumerate(pipeline_rows(spec, images, labels, num_classes, count, config.seed,
                                          f"config.augment.{key}")):
      rows.append((f"{key} #{e + 1}", row, None))
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  draw_grid(rows, _OUT.value, f"{data.name}\ntrain: {config.augment.train}\n"
            f"eval_strong: {config.augment.eval_strong}")
  print(f"wrote {_OUT.value}: {len(rows)} rows")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
