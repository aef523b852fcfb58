"""Another lab's labelled images summarised: the choice among all classes and restricted."""

import numpy as np
import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import labelled_set

NAMES = ["a", "b", "c", "platelet"]

# Labels a, a, b, b, b (c and platelet absent). The model's argmax: platelet, a, b, platelet, c.
PROBABILITIES = np.array([[0.30, 0.10, 0.00, 0.60],   # a: a once platelet is dropped
                          [0.70, 0.10, 0.10, 0.10],   # a
                          [0.10, 0.50, 0.20, 0.20],   # b
                          [0.05, 0.15, 0.10, 0.70],   # b once platelet is dropped
                          [0.20, 0.10, 0.60, 0.10]])  # c; a once c is dropped
LABELS = np.array([0, 0, 1, 1, 1])


def test_balanced_accuracy_is_over_the_classes_present_only():
  summary = labelled_set.summarize(PROBABILITIES, LABELS, NAMES)
  assert summary["classes_present"] == ["a", "b"]
  assert summary["per_class_recall"] == {"a": 0.5, "b": pytest.approx(1 / 3)}
  assert summary["balanced_accuracy"] == pytest.approx((0.5 + 1 / 3) / 2)
  assert summary["accuracy"] == pytest.approx(2 / 5)
  assert np.array_equal(summary["confusion"], [[1, 0, 0, 1], [0, 1, 1, 1], [0] * 4, [0] * 4])


def test_the_default_restriction_is_the_classes_present():
  summary = labelled_set.summarize(PROBABILITIES, LABELS, NAMES)
  assert summary["restricted_to"] == ["a", "b"]
  # platelet dropped: rows 0 and 3 move to their label; c dropped: row 4 goes to a.
  assert summary["restricted_per_class_recall"] == {"a": 1.0, "b": pytest.approx(2 / 3)}
  assert summary["restricted_balanced_accuracy"] == pytest.approx(5 / 6)
  assert summary["restricted_accuracy"] == pytest.approx(4 / 5)
  assert np.array_equal(summary["restricted_confusion"],
                        [[2, 0, 0, 0], [1, 2, 0, 0], [0] * 4, [0] * 4])


def test_a_given_restriction_changes_the_argmax_as_expected():
  summary = labelled_set.summarize(PROBABILITIES, LABELS, NAMES, restrict=["c", "b", "a"])
  assert summary["restricted_to"] == ["a", "b", "c"]  # the run's class order
  # platelet dropped: row 0 -> a, row 3 -> b; row 4 stays c.
  assert summary["restricted_per_class_recall"] == {"a": 1.0, "b": pytest.approx(2 / 3)}
  assert np.array_equal(summary["restricted_confusion"][1], [0, 2, 1, 0])
  # The choice among all classes does not depend on the restriction.
  assert summary["balanced_accuracy"] == pytest.approx((0.5 + 1 / 3) / 2)


def test_restricted_probabilities_are_renormalised_with_the_others_at_zero():
  restricted = labelled_set.restrict_probabilities(PROBABILITIES, [0, 1])
  assert np.allclose(restricted[:, 2:], 0)
  assert np.allclose(restricted.sum(axis=1), 1)
  assert np.allclose(restricted[0, :2], [0.75, 0.25])
  # A row whose kept classes all have probability 0 is uniform over them.
  assert np.allclose(labelled_set.restrict_probabilities([[0.0, 0.0, 1.0]], [0, 1]),
                     [[0.5, 0.5, 0.0]])


def test_an_unknown_class_is_a_one_line_error_naming_the_flag_and_the_known_names():
  with pytest.raises(UserError, match=r"^--classes=a,eosinofil: unknown class 'eosinofil' "
                     r"\(known: a, b, c, platelet\)$"):
    labelled_set.summarize(PROBABILITIES, LABELS, NAMES, restrict=["a", "eosinofil"])
  with pytest.raises(UserError, match=r"^config.evals.lisc.classes=x: unknown class 'x'"):
    labelled_set.restriction(NAMES, ["x"], "config.evals.lisc.classes")


def test_markdown_lists_each_present_class_both_ways():
  text = labelled_set.markdown(labelled_set.summarize(PROBABILITIES, LABELS, NAMES))
  assert "| a | 2 | 50.0 | 100.0 |" in text and "| b | 3 | 33.3 | 66.7 |" in text
  assert "| c |" not in text
  assert "balanced accuracy 41.7%" in text and "Restricted to a, b: balanced accuracy 83.3%" in text
