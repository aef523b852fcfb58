"""Out-of-distribution scores (bloodcell_jax/evaluation/ood.py) and the trust flags `predict`
writes for one run or an ensemble."""

import numpy as np
import pytest

from bloodcell_jax.cli import predict
from bloodcell_jax.data.cleaning import settings
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import evaluators, ood
from configs import default
from helpers import cleaning, injection

NUM_CLASSES, DIM = 3, 6


def blobs(n, rng, shift=0.0):
  """Features of three well separated classes, their labels, and logits that agree."""
  labels = np.arange(n) % NUM_CLASSES
  centres = 4.0 * np.eye(NUM_CLASSES, DIM)
  features = centres[labels] + rng.normal(0, 1, (n, DIM)) + shift
  logits = 3.0 * features[:, :NUM_CLASSES]
  return features, labels, logits


@pytest.fixture(scope="module")
def cell_images():
  return cleaning.cells(48, seed=1)[0]


@pytest.fixture(scope="module")
def fitted(cell_images):
  rng = np.random.default_rng(0)
  train_features, train_labels, _ = blobs(600, rng)
  val_features, _, val_logits = blobs(400, rng)
  model = ood.fit(train_features, train_labels, val_logits, val_features, cell_images[:32],
                  num_classes=NUM_CLASSES, temperature=1.0, confidence="msp",
                  feature="mahalanobis", pass_fraction=0.9, k=5,
                  cleaning_settings=settings.CleaningSettings())
  return model, (val_features, val_logits)


def test_mahalanobis_is_the_smallest_distance_to_a_class_mean_under_the_shared_precision():
  rng = np.random.default_rng(1)
  features, labels, _ = blobs(300, rng)
  model = ood.fit_features(features, labels, NUM_CLASSES)
  points = rng.normal(0, 3, (5, DIM))
  brute = np.min([[(p - m) @ model.precision @ (p - m) for m in model.means] for p in points],
                 axis=1)
  np.testing.assert_allclose(model.mahalanobis(points), brute, rtol=1e-6, atol=1e-9)
  assert model.mahalanobis(model.means[1:2] + 10.0) > 10 * model.mahalanobis(model.means[1:2])


def test_the_feature_margin_is_low_near_the_predicted_class_and_high_between_or_beyond_it():
  rng = np.random.default_rng(4)
  features, labels, _ = blobs(300, rng)
  model = ood.fit_features(features, labels, NUM_CLASSES)
  at_class_1 = model.means[1:2]
  between_1_and_2 = (model.means[1:2] + model.means[2:3]) / 2
  distances = model.class_distances(np.concatenate([at_class_1, between_1_and_2, at_class_1]))
  np.testing.assert_allclose(distances.min(axis=1), model.mahalanobis(
      np.concatenate([at_class_1, between_1_and_2, at_class_1])))
  margin = ood.feature_margin(distances, np.array([1, 1, 0]))
  assert margin[0] < -1.0  # at its class's mean, far from the others'
  assert abs(margin[1]) < 0.3 * abs(margin[0])  # halfway: either class is as near
  assert margin[2] == pytest.approx(-margin[0])  # predicted 0 while at class 1's mean


def test_knn_is_the_distance_to_the_kth_nearest_normalised_training_feature():
  rng = np.random.default_rng(2)
  features, labels, _ = blobs(50, rng)
  model = ood.fit_features(features, labels, NUM_CLASSES, k=3)
  query = rng.normal(0, 1, (4, DIM))
  bank = features / np.linalg.norm(features, axis=1, keepdims=True)
  q = query / np.linalg.norm(query, axis=1, keepdims=True)
  brute = np.sort(np.linalg.norm(q[:, None] - bank[None], axis=2), axis=1)[:, 2]
  np.testing.assert_allclose(model.knn(query), brute, rtol=1e-6)


def test_energy_and_msp_are_low_for_confident_logits():
  confident, unsure = np.array([[9.0, 0.0, 0.0]]), np.array([[0.3, 0.2, 0.1]])
  for score in (ood.msp_score, ood.energy_score):
    assert score(confident, 1.0)[0] < score(unsure, 1.0)[0]
  assert ood.msp_score(unsure, 100.0)[0] == pytest.approx(2 / 3, abs=0.01)


def test_validation_passes_at_the_pass_fraction_and_each_flag_has_its_reason(fitted,
                                                                             cell_images):
  model, _ = fitted
  rng = np.random.default_rng(3)
  held_features, _, held_logits = blobs(300, rng)
  held = model.scores(held_logits, held_features, cell_images[np.arange(300) % 48])
  passed = np.mean(held["flag"] == "ok")
  assert 0.83 <= passed <= 0.96  # 90% of images like the validation set's

  far_features = held_features[:16] + 12.0  # features unlike any class
  far = model.scores(held_logits[:16], far_features, cell_images[:16])
  assert set(far["flag"]) == {"unlike_training"} and np.all(far["ood_score"] >= 1)

  unsure_logits = np.zeros((16, NUM_CLASSES))  # typical features, no class preferred
  unsure = model.scores(unsure_logits, held_features[:16], cell_images[:16])
  assert set(unsure["flag"]) == {"uncertain"}

  photos = np.stack([injection.contaminant(kind, rng) for kind in ("blank", "text", "screenshot")])
  pictures = model.scores(held_logits[:3], held_features[:3], photos)
  assert list(pictures["flag"]) == ["not_a_cell"] * 3 and np.all(pictures["cell"] >= 1)

  green = cell_images[:4].copy()
  green[..., 0] //= 4  # a stain and white balance far from the training images' colours
  recoloured = model.scores(held_logits[:4], held_features[:4], green)
  assert set(recoloured["flag"]) == {"unlike_training"} and np.all(recoloured["colour"] >= 1)


def test_a_model_without_features_flags_by_confidence_and_appearance(cell_images):
  rng = np.random.default_rng(4)
  _, _, val_logits = blobs(200, rng)
  model = ood.fit(None, None, val_logits, None, cell_images[:32], num_classes=NUM_CLASSES,
                  temperature=1.0, confidence="energy", feature="mahalanobis",
                  pass_fraction=0.95, k=5, cleaning_settings=settings.CleaningSettings())
  assert model.feature == "" and model.features is None
  scores = model.scores(np.zeros((2, NUM_CLASSES)), None, cell_images[:2])
  assert "mahalanobis" not in scores and list(scores["flag"]) == ["uncertain"] * 2


def test_the_written_model_scores_like_the_fitted_one(fitted, cell_images, tmp_path):
  model, (features, logits) = fitted
  path = tmp_path / ood.FILE
  path.write_bytes(ood.to_bytes(model))
  again = ood.from_file(str(path))
  before = model.scores(logits[:20], features[:20], cell_images[:20], every=True)
  after = again.scores(logits[:20], features[:20], cell_images[:20], every=True)
  for key in ("ood_score", "mahalanobis", "knn", "feature_margin", "cell", "colour"):
    np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-6)
  assert list(after["flag"]) == list(before["flag"])
  flagging = again.scores(logits[:20], features[:20], cell_images[:20])  # mahalanobis flags
  assert "knn" not in flagging and list(flagging["flag"]) == list(after["flag"])
  np.testing.assert_array_equal(flagging["ood_score"], after["ood_score"])


@pytest.mark.parametrize("contents", [b"", b"PK\x03\x04 cut short", b"not an npz at all"])
def test_a_damaged_model_file_is_one_line_naming_it(tmp_path, contents):
  path = tmp_path / ood.FILE
  path.write_bytes(contents)
  with pytest.raises(UserError, match=f"^{path}: damaged") as raised:
    ood.from_file(str(path))
  assert "\n" not in str(raised.value)


def test_an_ensemble_flags_by_its_mean_score_and_keeps_the_worst_reason():
  first = {"ood_score": np.array([0.2, 1.5, 0.9, 0.1]), "cell": np.array([0.0, 0.0, 0.0, 2.0]),
           "flag": np.array(["ok", "unlike_training", "ok", "not_a_cell"])}
  second = {"ood_score": np.array([0.4, 0.9, 0.8, 0.1]), "cell": np.array([0.0, 0.0, 0.0, 0.0]),
            "flag": np.array(["ok", "ok", "ok", "ok"])}
  joined = predict.trust_of([first, second])
  np.testing.assert_allclose(joined["ood_score"], [0.3, 1.2, 0.85, 0.1])
  assert list(joined["flag"]) == ["ok", "unlike_training", "ok", "not_a_cell"]
  assert predict.trust_of([first, None]) is None


@pytest.mark.parametrize("entry, message", [
    (dict(feature_score="cosine"), r"^config.evals.ood.feature_score='cosine': expected one of "
                                   r"mahalanobis, knn"),
    (dict(confidence_score="margin"), r"^config.evals.ood.confidence_score='margin': expected"),
    (dict(pass_fraction=1.0), r"^config.evals.ood.pass_fraction=1.0: expected a fraction"),
    (dict(every_epochs=2), r"^config.evals.ood.every_epochs=2: the out-of-distribution model is "
                           r"fitted once"),
])
def test_the_ood_evaluators_bad_options_are_one_line_naming_the_key(entry, message):
  config = default.get_config()
  config.evals.ood = dict(type="ood", **entry)
  with pytest.raises(UserError, match=message):
    evaluators.build(config)
