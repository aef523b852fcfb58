"""A damaged file a run left (results.json, failure.json, predictions/*.csv) is one line naming
it in every reader: the results table and the sweep report show the run as damaged, never as
missing or pending, and a sweep reruns it. Property-based: Hypothesis cuts or overwrites each
file kind at random offsets."""

import os
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bloodcell_jax import atomic
from bloodcell_jax.results import predictions, table
from bloodcell_jax.sweep import runner
from bloodcell_jax.training import run_files

CLASSES = ["basophil", "eosinophil", "lymphocyte"]
DIGEST = "d1"


def write_run(workdir: str, seed: int) -> None:
  """A finished sweep run as the trainer leaves it: results.json and predictions/val.csv."""
  rng = np.random.default_rng(seed)
  probabilities = rng.dirichlet(np.ones(len(CLASSES)), size=12)
  labels = rng.integers(0, len(CLASSES), 12)
  os.makedirs(os.path.join(workdir, run_files.PREDICTIONS_DIR))
  predictions.write_probabilities(
      os.path.join(workdir, run_files.PREDICTIONS_DIR, "val.csv"),
      [f"{CLASSES[y]}/{i}.jpg" for i, y in enumerate(labels)], probabilities, CLASSES, labels)
  atomic.write_json(os.path.join(workdir, run_files.RESULTS), {
      "val_accuracy": float(np.mean(probabilities.argmax(1) == labels)),
      "sweep": {"group": "base", "config_digest": DIGEST}})


def damage(path: str, offset_fraction: float, garbage: bytes) -> None:
  """Cuts `path` at a fraction of its length, or (with `garbage`) overwrites it from there."""
  data = open(path, "rb").read()
  offset = int(offset_fraction * (len(data) - 1))
  with open(path, "wb") as f:
    f.write(data[:offset] + garbage[:len(data) - offset])


corruptions = st.tuples(st.sampled_from([run_files.RESULTS, "predictions/val.csv"]),
                        st.floats(0.0, 1.0), st.binary(max_size=64))


@settings(max_examples=80, deadline=None)
@given(corruption=corruptions)
def test_a_damaged_run_is_shown_as_damaged_and_rerun_never_dropped(corruption):
  relative, offset_fraction, garbage = corruption
  with tempfile.TemporaryDirectory() as sweep:
    for seed, name in enumerate(("base.seed0", "base.seed1")):
      write_run(os.path.join(sweep, name), seed)
    damaged_path = os.path.join(sweep, "base.seed1", relative)
    damage(damaged_path, offset_fraction, garbage)
    left = open(damaged_path, "rb").read()

    runs = {run.name: run for run in table.read_runs(sweep)}
    built = table.build(list(runs.values()))
    shown = table.markdown(built)
    state = runner.status(os.path.join(sweep, "base.seed1"), DIGEST)

    assert sorted(runs) == ["base.seed0", "base.seed1"]  # never dropped
    assert runs["base.seed0"].results is not None
    run = runs["base.seed1"]
    if run.damaged:
      assert run.error.startswith(f"{damaged_path}: damaged (") and "\n" not in run.error
      assert f"- base.seed1: {run.error}" in shown
      assert state == "damaged"  # a sweep rerun redoes it
    else:  # the cut or the new bytes left a file that still reads as a run's
      assert run.results is not None and state in ("finished", "pending")
    assert open(damaged_path, "rb").read() == left  # reading changes nothing


@settings(max_examples=80, deadline=None)
@given(text=st.one_of(st.binary(max_size=40), st.just(b"[1, 2]"), st.just(b'"text"')))
def test_a_json_file_reads_as_an_object_or_one_line_naming_it(text):
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, run_files.CONFIG)
    with open(path, "wb") as f:
      f.write(text)
    try:
      assert isinstance(run_files.read_json(path), dict)
    except run_files.DamagedFile as e:
      assert str(e).startswith(f"{path}: damaged (") and "\n" not in str(e)


def test_a_missing_file_is_missing_not_damaged(tmp_path):
  assert run_files.read_json(str(tmp_path / "results.json")) is None
  assert table.read_run(str(tmp_path), "run") is None
