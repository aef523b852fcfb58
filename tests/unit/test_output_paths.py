"""Every program's outputs are checked before any work (bloodcell_jax/output_paths.py) and
written whole or not at all (bloodcell_jax/atomic.py): no input replaced, no partial file."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from bloodcell_jax import atomic, output_paths  # noqa: E402
from bloodcell_jax.errors import UserError, is_disk_full  # noqa: E402
from bloodcell_jax.training import run_files  # noqa: E402


def test_an_output_that_is_an_input_is_refused_by_any_name(tmp_path):
  data = tmp_path / "cells.npz"
  data.write_bytes(b"PK")
  link = tmp_path / "link.npz"
  link.symlink_to(data)
  for output in (str(data), str(link), os.path.join(str(tmp_path), ".", "cells.npz")):
    with pytest.raises(UserError, match=r"^--output=.*: is --input=.*cells\.npz; writing it "
                       r"would replace the input: choose another path$"):
      output_paths.file_output(output, "--output", [("--input", str(data))])
  assert data.read_bytes() == b"PK"
  assert output_paths.file_output(str(tmp_path / "preds.csv"), "--output",
                                  [("--input", str(data))]) == str(tmp_path / "preds.csv")


@pytest.mark.parametrize("relative, message", [
    ("missing/preds.csv", r"no such directory .*missing$"),
    (".", r"is a directory; expected a file path$"),
])
def test_an_output_path_that_cannot_be_a_file_is_one_line(tmp_path, relative, message):
  with pytest.raises(UserError, match=rf"^--out=.*: {message}"):
    output_paths.file_output(str(tmp_path / relative), "--out")


def test_two_outputs_on_one_path_are_refused(tmp_path):
  output_paths.distinct([("the JSON", str(tmp_path / "a.json")), ("the table", "b.md")])
  with pytest.raises(UserError, match=r"^the JSON and the table would both be written to "):
    output_paths.distinct([("the JSON", str(tmp_path / "r.md")),
                           ("the table", str(tmp_path / "r.md"))])


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path):
  path = tmp_path / "results.json"
  atomic.write_json(str(path), {"val_accuracy": 0.5})
  figure = plt.figure()
  figure.savefig = lambda *args, **kwargs: (_ for _ in ()).throw(OSError(28, "No space left "
                                                                         "on device"))
  with pytest.raises(UserError, match=r"results\.json: could not write it \(No space left on "
                     r"device\)$") as raised:
    atomic.save_figure(figure, str(path), 80)
  assert is_disk_full(raised.value)  # the OS error stays behind it, for the trainer
  assert run_files.read_json(str(path)) == {"val_accuracy": 0.5}
  assert os.listdir(tmp_path) == ["results.json"]
  with pytest.raises(UserError, match=r"missing/x\.md: could not write it \(No such file or "
                     r"directory\)$"):
    atomic.write_text(str(tmp_path / "missing" / "x.md"), "text")
