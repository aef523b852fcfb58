"""Exported models (SavedModel, ONNX, LiteRT) give the JAX model's probabilities and carry their
metadata: the CNN of configs/cnn_xsite.py here (framing and stain density inside the model);
EfficientNetV2-B0 and a small ConvNeXt in tests/e2e/test_export_formats.py, the program on a
trained run in tests/e2e/test_export_cli.py."""

import json
import os
import shutil
import tempfile

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bloodcell_jax.errors import UserError
from bloodcell_jax.export import runtimes
from bloodcell_jax.export import writer as export
from helpers import exporting


@pytest.fixture(scope="module", params=["cnn"])
def exportable(request):
  return exporting.exportable(request.param, with_ood=True, framing="nucleus",
                              input_norm="stain_density")


@pytest.fixture(scope="module")
def converted(exportable, tmp_path_factory):
  """{(format, weights): path} of `exportable` (exporting.convert)."""
  return exporting.convert(exportable, tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("export_format,weights,tolerance", exporting.FORMATS)
def test_every_format_gives_the_jax_probabilities_at_any_batch_size(exportable, converted,
                                                                     export_format, weights,
                                                                     tolerance):
  exporting.assert_gives_the_jax_probabilities(exportable, converted[export_format, weights],
                                               export_format, tolerance)


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["onnx", "tflite"]), keep=st.floats(0.0, 0.999))
def test_a_cut_exported_file_is_one_line_naming_it(converted, kind, keep):
  with open(converted[kind, "float32"], "rb") as f:
    data = f.read()
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, f"cut.{kind}")
    with open(path, "wb") as f:
      f.write(data[:int(keep * len(data))])
    with pytest.raises(UserError) as refused:
      runtimes.load(path)
  assert str(refused.value).startswith(f"--model={path}: ") and "\n" not in str(refused.value)


@pytest.mark.parametrize("changes, message", [
    ({"class_names": list("abcdefg")}, r"its metadata names 7 classes, but the model has 8 "
                                       r"outputs$"),
    ({"image_size": 64}, r"its metadata says image_size 64, but the model takes images "
                         r"\[None, 32, 32, 3\]$"),
])
def test_metadata_that_does_not_fit_the_model_is_refused(converted, tmp_path, changes, message):
  model = onnx.load(converted["onnx", "float32"])
  props = {p.key: p.value for p in model.metadata_props}
  metadata = {**json.loads(props[runtimes.METADATA_KEY]), **changes}
  onnx.helper.set_model_props(model, {**props, runtimes.METADATA_KEY: json.dumps(metadata)})
  path = str(tmp_path / "edited.onnx")
  onnx.save(model, path)
  with pytest.raises(UserError, match=rf"^--model={path}: {message}"):
    runtimes.load(path)


def test_a_saved_model_without_its_metadata_is_one_line(converted, tmp_path):
  path = str(tmp_path / "saved_model")
  shutil.copytree(converted["saved_model", "float32"], path)
  os.remove(os.path.join(path, "assets", runtimes.METADATA_FILE))
  with pytest.raises(UserError, match=rf"^--model={path}: damaged or not a saved_model model "
                     r"written by bloodcell_jax.export \(FileNotFoundError: "):
    runtimes.load(path)


def test_exporting_over_a_saved_model_replaces_its_files_only(exportable, converted, tmp_path):
  out = tmp_path / "model"
  shutil.copytree(converted["saved_model", "float32"], out)
  (out / "NOTES.txt").write_text("calibrated on our scanner")
  (out / "2").mkdir()
  (out / "2" / "saved_model.pb").write_bytes(b"another version")
  stale = out / "variables" / "stale.index"
  stale.write_bytes(b"")

  export.export(exportable, "saved_model", str(out))

  assert (out / "NOTES.txt").read_text() == "calibrated on our scanner"
  assert (out / "2" / "saved_model.pb").read_bytes() == b"another version"
  assert not stale.exists()  # the model's own folders are replaced whole
  exporting.assert_gives_the_jax_probabilities(exportable, str(out), "saved_model", 1e-5)
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".replaced-")]


def test_a_scratch_folder_left_by_a_killed_export_is_removed_by_the_next(tmp_path):
  left = tmp_path / f".bloodcell-export-{2**22 + 17}-abc"  # above Linux's default pid_max
  mine = tmp_path / f".bloodcell-export-{os.getpid()}-def"
  left.mkdir()
  mine.mkdir()
  export._remove_stale_scratch(str(tmp_path))
  assert not left.exists() and mine.exists()
