"""The labelled_folder evaluator's one-line errors: a missing path, a folder class the run
lacks, an unknown class in `classes`."""

import types

import pytest

from bloodcell_jax.data.image_set import PBC_CLASS_NAMES
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import evaluators, inference
from configs import default
from helpers.images import write_image_folder


def _config(**entry):
  config = default.get_config()
  config.evals.lab = dict(type="labelled_folder", **entry)
  return config


def _context():
  return types.SimpleNamespace(data=types.SimpleNamespace(
      train=types.SimpleNamespace(class_names=PBC_CLASS_NAMES)))


def test_path_is_required_and_must_exist(tmp_path):
  with pytest.raises(UserError, match=r"^config.evals.lab.path: required"):
    evaluators.build(_config())
  with pytest.raises(UserError, match=r"^config.evals.lab.path=.*nope: no such file"):
    evaluators.build(_config(path=str(tmp_path / "nope")))
  with pytest.raises(UserError, match=r"^config.evals.lab.batch_size=0: expected an integer"):
    evaluators.build(_config(path=str(tmp_path), batch_size=0))


def test_declared_metrics_and_options(tmp_path):
  built, = [e for e in evaluators.build(_config(path=str(tmp_path))) if e.name == "lab"]
  declared = {m.key: m for m in built.metrics()}
  assert list(declared) == ["lab_balanced_accuracy", "lab_restricted_balanced_accuracy",
                            "lab_accuracy"]
  assert {m.section for m in declared.values()} == {"Other labs"}
  assert [m.table for m in declared.values()] == [True, True, False]


def test_a_folder_class_the_run_lacks_is_one_line_naming_it(tmp_path):
  lab = write_image_folder(str(tmp_path / "lab"), images_per_class=1, classes=("blast",
                                                                                 "monocyte"))
  built, = [e for e in evaluators.build(_config(path=lab)) if e.name == "lab"]
  with pytest.raises(UserError, match=r"^config.evals.lab.path: .*lab: class folder\(s\) "
                     r"\['blast'\] are not among the training classes"):
    built(_context())
  with pytest.raises(UserError, match=r"^--input: .*\['blast'\] are not among"):
    inference.read_labelled(lab, 16, list(PBC_CLASS_NAMES), "--input")


def test_a_subset_of_the_classes_is_labelled_in_the_run_order(tmp_path):
  lab = write_image_folder(str(tmp_path / "lab"), images_per_class=2,
                           classes=("neutrophil", "basophil"))
  data = inference.read_labelled(lab, 16, list(PBC_CLASS_NAMES), "--input")
  assert tuple(data.class_names) == PBC_CLASS_NAMES
  assert sorted(set(data.labels.tolist())) == [PBC_CLASS_NAMES.index("basophil"),
                                               PBC_CLASS_NAMES.index("neutrophil")]


def test_an_unknown_class_in_classes_names_the_key(tmp_path):
  lab = write_image_folder(str(tmp_path / "lab"), images_per_class=1, classes=("monocyte",))
  built, = [e for e in evaluators.build(_config(path=lab, classes="monocyte,blast"))
            if e.name == "lab"]
  with pytest.raises(UserError, match=r"^config.evals.lab.classes=monocyte,blast: unknown "
                     r"class 'blast' \(known: basophil, "):
    built(_context())
