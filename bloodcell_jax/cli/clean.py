"""Find duplicates, near duplicates, label conflicts, contamination and test leakage.

  bloodcell-clean --data=PATH [--test=PATH] --out=DIR

PATH is an ImageFolder or an .npz (as config.data.train takes). Writes into DIR:
report.json (one finding per entry: kind, ids, score, details), keep.txt (the
ids to train on), contact_<kind>_<page>.png (every finding, for a person to
check) and prints a summary. The input is only read. Every threshold of
config.data.cleaning is also a flag here (--near_min_similarity=0.9, ...).
"""

import dataclasses
import os

from absl import app, flags

from bloodcell_jax.cli import common
from bloodcell_jax.data.cleaning import settings as settings_lib
from bloodcell_jax.errors import UserError

_DATA = flags.DEFINE_string("data", None, "ImageFolder or .npz to clean.")
_TEST = flags.DEFINE_string("test", None, "Held-out ImageFolder or .npz: copies of its images "
                            "in --data are reported as leakage.")
_OUT = flags.DEFINE_string("out", None, "Directory for report.json, keep.txt and contact sheets.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Images are read at this size, as training "
                                   "reads them (config.image_size).")


def _define_setting_flags():
  """One flag per field of CleaningSettings, with its default."""
  definers = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}
  for field in dataclasses.fields(settings_lib.CleaningSettings):
    definers[type(field.default)](field.name, field.default,
                                  f"config.data.cleaning.{field.name}")


_define_setting_flags()


def settings_from_flags() -> settings_lib.CleaningSettings:
  values = {f.name: flags.FLAGS[f.name].value
            for f in dataclasses.fields(settings_lib.CleaningSettings)}
  return settings_lib.CleaningSettings(**values).validate(prefix="--")


def check_out_dir(out_dir: str, *inputs: str) -> None:
  """The output may not live inside an input (an ImageFolder would gain a 'class')."""
  out = os.path.realpath(out_dir)
  for path in inputs:
    if path and os.path.isdir(path):
      root = os.path.realpath(path)
      if out == root or out.startswith(root + os.sep):
        raise UserError(f"--out={out_dir}: inside the input {path}; choose a directory outside "
                        "it (the input is never written to)")


def main(argv):
  from bloodcell_jax.data import sources  # pylint: disable=g-import-not-at-top
  from bloodcell_jax.data.cleaning import contact_sheets, report, run  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _DATA.value or not _OUT.value:
    raise UserError("--data and --out are required (bloodcell-clean "
                    "--data=PATH --out=DIR)")
  check_out_dir(_OUT.value, _DATA.value, _TEST.value)
  chosen = settings_from_flags()
  data = sources.load_source(_DATA.value, _IMAGE_SIZE.value)
  held_out = {}
  if _TEST.value:
    held_out["test"] = sources.load_source(_TEST.value, _IMAGE_SIZE.value, default_split="test",
                                           folder_classes=data.class_names)
  result = run.clean(data, chosen, held_out)
  written = report.write(result, _OUT.value, source=_DATA.value)
  if chosen.contact_sheets:
    contact_sheets.write_all(result, _OUT.value)
  print(report.console_summary(written, _OUT.value))


def run():
  common.run_program(main)


if __name__ == "__main__":
  run()
