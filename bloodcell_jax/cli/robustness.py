"""`bloodcell-robustness`: a trained run's accuracy under distribution shifts.

  bloodcell-robustness --workdir=DIR [--input=PATH [--classes=a,b,...]] [--out=FILE] [--ema]
      [--adapt_bn] [--shifts=defocus,stain,...] [--seed=0]
  bloodcell-robustness --workdir=DIR1 --workdir=DIR2 --out=pair.json  # the runs averaged

See bloodcell_jax/evaluation/robustness.py for what it measures and writes.
"""

from absl import flags

from bloodcell_jax import runtime
from bloodcell_jax.cli import common
from bloodcell_jax.errors import UserError

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "A training run's workdir; repeat it to "
                                     "measure the runs' averaged probabilities (with --out).")
_INPUT = flags.DEFINE_string("input", "", "Labelled ImageFolder or .npz to evaluate instead of "
                             "the run's validation split; it may hold some of the run's "
                             "classes only.")
_CLASSES = flags.DEFINE_list("classes", [], "With --input: the classes the restricted choice "
                             "is among (comma-separated; default: the classes present).")
_OUT = flags.DEFINE_string("out", "", "JSON results (default: WORKDIR/robustness.json).")
_EMA = flags.DEFINE_bool("ema", False, "Evaluate the run's weight average.")
_ADAPT_BN = flags.DEFINE_bool("adapt_bn", False, "Recompute BatchNorm statistics on each "
                              "shifted set before predicting it (AdaBN).")
_SHIFTS = flags.DEFINE_list("shifts", [], "Shifts to run (default: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the shifts' random placement.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per forward pass.", lower_bound=1)
_GRID_IMAGE = flags.DEFINE_integer("grid_image", 0, "Index of the image the PNG grid shows.")


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise UserError("--workdir is required")
  runtime.keep_tensorflow_on_host()
  from bloodcell_jax.evaluation import robustness  # pylint: disable=g-import-not-at-top
  robustness.run(_WORKDIR.value, _INPUT.value, _OUT.value, _EMA.value, _ADAPT_BN.value,
                 _SHIFTS.value, _SEED.value, _BATCH_SIZE.value, _GRID_IMAGE.value,
                 _CLASSES.value)


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
