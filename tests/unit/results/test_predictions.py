"""Prediction CSVs (bloodcell_jax/results/predictions.py) with predict's trust columns."""

import csv

import numpy as np

from bloodcell_jax.results import predictions


def test_trust_columns_and_abstentions_round_trip(tmp_path):
  path = str(tmp_path / "p.csv")
  probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
  predictions.write_probabilities(
      path, ["a.png", "b.png"], probabilities, ["x", "y", "z"],
      extra={"ood_score": np.array([0.25, 3.5]), "flag": np.array(["ok", "not_a_cell"])},
      abstain=np.array([False, True]))
  rows = list(csv.DictReader(open(path)))
  assert list(rows[0]) == ["id", "pred", "pred_name", "confidence", "ood_score", "flag",
                           "p_x", "p_y", "p_z"]
  assert [(r["pred"], r["pred_name"], r["ood_score"], r["flag"]) for r in rows] == [
      ("0", "x", "0.2500", "ok"), ("", "", "3.5000", "not_a_cell")]
  ids, labels, read, names = predictions.read_probabilities(path)
  assert ids == ["a.png", "b.png"] and labels is None and names == ["x", "y", "z"]
  np.testing.assert_allclose(read, probabilities)
