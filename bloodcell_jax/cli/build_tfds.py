"""Prepare the `pbc_cells` tensorflow-datasets dataset (bloodcell_jax/data/tfds_pbc.py).

  bloodcell-build-tfds --source=../shared/data/pbc96 \\
      --keep_file=/tmp/clean_pbc96/keep.txt --name=pbc96_clean --data_dir=DIR

then `tfds.load("pbc_cells/pbc96_clean", split="train", data_dir=DIR)` after
`import bloodcell_jax.data.tfds_pbc`.
"""

from absl import app, flags

from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_SOURCE = flags.DEFINE_string("source", None, "ImageFolder or .npz.")
_NAME = flags.DEFINE_string("name", None, "Config name, e.g. pbc96_clean (loaded as "
                            "pbc_cells/NAME).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir to prepare into.")
_KEEP_FILE = flags.DEFINE_string("keep_file", "", "keep.txt of a cleaning run; empty keeps all.")
_TEST_SOURCE = flags.DEFINE_string("test_source", "", "A separate test set (else split off "
                                   "the source).")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "Validation share of the kept images.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "Test share (without --test_source).")
_SEED = flags.DEFINE_integer("seed", 0, "Split seed.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Square image size.", lower_bound=16)


def main(argv):
  from bloodcell_jax.data import tfds_pbc  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _SOURCE.value or not _DATA_DIR.value or not _NAME.value:
    raise UserError("--source, --name and --data_dir are required")
  builder = tfds_pbc.build(_DATA_DIR.value, _NAME.value, _SOURCE.value, _KEEP_FILE.value,
                           _TEST_SOURCE.value, _VAL_FRACTION.value, _TEST_FRACTION.value,
                           _SEED.value, _IMAGE_SIZE.value)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f"prepared {builder.info.full_name} in {builder.data_dir}: {splits}")


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
