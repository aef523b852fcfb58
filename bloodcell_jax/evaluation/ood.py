"""Out-of-distribution scores: how unlike the run's training images an image is.

Three views, each higher for images less like the training data:
- confidence, from the logits with the run's temperature T: one minus the maximum softmax
  probability (`msp`, Hendrycks and Gimpel 2017) or the energy -T logsumexp(z / T)
  (`energy`, Liu et al. 2020);
- the penultimate features (the classifier's input): the smallest class-conditional
  Mahalanobis distance with one covariance shared by the classes (`mahalanobis`, Lee et al.
  2018), or the distance to the k-th nearest training image after L2 normalisation (`knn`,
  Sun et al. 2022); and how much nearer the predicted class's mean is than the next class's
  (`feature_margin`), which says how sure rather than how unfamiliar: selective prediction
  ranks by it;
- the cleaning model's measures (bloodcell_jax/data/cleaning/contamination.py), fitted on the
  training images: texture and blankness (`cell`; 1 or more: not a cell image), so that a
  photo, a screenshot or a page of text is flagged whatever the network says, and colours
  off the training images' gamut (`colour`; 1 or more: another stain, camera or white balance).

Fitted at the end of training (the `ood` evaluator) on training images, with thresholds set
on the validation split: each of the confidence and feature scores is rescaled so that its
validation median is 0 and its `pass_fraction` quantile is 1, and the larger of the two is
divided by its own `pass_fraction` quantile on validation; `ood_score` is that, or the colour
or cell score where one is larger. An image passes when its ood_score is below 1: about
`pass_fraction` of the validation images do. Its flag says why an image did not pass:
  not_a_cell       the cell score is 1 or more;
  unlike_training  the colour score is 1 or more, or the feature score is the larger part;
  uncertain        the confidence score is.
"""

import dataclasses
import io
import zipfile
from typing import Dict, Optional

import numpy as np
from scipy import special

CONFIDENCE_SCORES = ("msp", "energy")
FEATURE_SCORES = ("mahalanobis", "knn")
FLAGS = ("ok", "uncertain", "unlike_training", "not_a_cell")
FILE = "ood.npz"


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
  return special.softmax(np.asarray(logits, np.float64) / temperature, axis=1)


def msp_score(logits: np.ndarray, temperature: float) -> np.ndarray:
  """1 - the largest softmax probability of logits / T."""
  return 1.0 - softmax(logits, temperature).max(axis=1)


def energy_score(logits: np.ndarray, temperature: float) -> np.ndarray:
  """-T logsumexp(logits / T): low for images the model has strong logits for."""
  return -temperature * special.logsumexp(np.asarray(logits, np.float64) / temperature, axis=1)


def confidence_score(name: str, logits: np.ndarray, temperature: float) -> np.ndarray:
  return (msp_score if name == "msp" else energy_score)(logits, temperature)


@dataclasses.dataclass
class FeatureModel:
  """The training images' penultimate features, summarised for both feature scores."""
  means: np.ndarray  # (C, D) class means
  precision: np.ndarray  # (D, D) inverse of the shared (shrunk) covariance
  bank: np.ndarray  # (M, D) L2-normalised features of training images, for knn
  k: int

  def class_distances(self, features: np.ndarray) -> np.ndarray:
    """(N, C): the squared Mahalanobis distance of each image to each class mean."""
    f = np.asarray(features, np.float64)
    projected = f @ self.precision
    cross = projected @ self.means.T
    own = np.einsum("nd,nd->n", projected, f)
    means = np.einsum("cd,de,ce->c", self.means, self.precision, self.means)
    return np.maximum(own[:, None] - 2 * cross + means[None], 0.0)

  def mahalanobis(self, features: np.ndarray) -> np.ndarray:
    """The smallest squared Mahalanobis distance to a class mean."""
    return self.class_distances(features).min(axis=1)

  def knn(self, features: np.ndarray) -> np.ndarray:
    """Distance to the k-th nearest training image, features L2-normalised."""
    f = normalised(features)
    k = min(self.k, len(self.bank))
    distances = []
    for start in range(0, len(f), 1024):  # (1024, M) at a time: bounded memory
      squared = np.maximum(2.0 - 2.0 * f[start:start + 1024] @ self.bank.T, 0.0)
      distances.append(np.sqrt(np.partition(squared, k - 1, axis=1)[:, k - 1]))
    return np.concatenate(distances) if distances else np.zeros(0)

  def score(self, name: str, features: np.ndarray) -> np.ndarray:
    return self.mahalanobis(features) if name == "mahalanobis" else self.knn(features)


def feature_margin(class_distances: np.ndarray, predicted: np.ndarray) -> np.ndarray:
  """How much farther the features are from the predicted class's mean than from the nearest
  other class's (root Mahalanobis distances): the trust score of Jiang et al. 2018 as a
  difference, negated so that higher is less sure. It ranks a run's own validation errors
  last better than the softmax does (docs/trust.md)."""
  distances = np.sqrt(np.asarray(class_distances, np.float64))
  rows = np.arange(len(distances))
  own = distances[rows, predicted]
  others = distances.copy()
  others[rows, predicted] = np.inf
  return own - others.min(axis=1)


def normalised(features: np.ndarray) -> np.ndarray:
  f = np.asarray(features, np.float64)
  return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def fit_features(features: np.ndarray, labels: np.ndarray, num_classes: int,
                 k: int = 10) -> FeatureModel:
  """Class means and the covariance of the features about them, shared by the classes (Lee et
  al. 2018), inverted with a pseudo-inverse where fewer images than features leave it
  singular; a class without images gets the overall mean."""
  f = np.asarray(features, np.float64)
  overall = f.mean(axis=0)
  means = np.stack([f[labels == c].mean(axis=0) if np.any(labels == c) else overall
                    for c in range(num_classes)])
  centred = f - means[labels]
  shared = centred.T @ centred / max(len(f), 1)
  return FeatureModel(means, np.linalg.pinv(shared, hermitian=True), normalised(f), int(k))


@dataclasses.dataclass
class AppearanceScorer:
  """The cleaning model's colour gamut and texture statistics (without its writing detector,
  which needs the training images), scoring two things apart:
  - `cell`: texture and blankness, what no stain or microscope changes: a photo, a screenshot,
    a page of text or an empty frame is not a cell image;
  - `colour`: the share of an image's worst tile off the training images' colours: another
    lab's stain or white balance, or a foreign picture.
  Each is a measure over its threshold: 1 or more fails it."""
  gamut_distance: np.ndarray  # float32 (32 ** 3,): grey levels from the gamut
  texture_median: np.ndarray  # (2,)
  texture_scale: np.ndarray  # (2,)
  limits: np.ndarray  # colour_tolerance, max_off_colour_fraction, max_texture_z, min_std

  @classmethod
  def fit(cls, images: np.ndarray, settings) -> "AppearanceScorer":
    from bloodcell_jax.data.cleaning import contamination  # pylint: disable=g-import-not-at-top
    settings = dataclasses.replace(settings, writing_fit_images=0)
    cell = contamination.fit(contamination.observe(images, strokes=False), settings, images)
    return cls(cell.gamut_distance, cell.texture_median, cell.texture_scale,
               np.array([settings.colour_tolerance, settings.max_off_colour_fraction,
                         settings.max_texture_z, settings.min_std], np.float64))

  def __call__(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    from bloodcell_jax.data.cleaning import contamination, settings  # pylint: disable=g-import-not-at-top
    if not len(images):
      return {"cell": np.zeros(0), "colour": np.zeros(0)}
    tolerance, max_off, max_z, min_std = (float(v) for v in self.limits)
    model = contamination.CellModel(self.gamut_distance, self.gamut_distance <= tolerance,
                                    self.texture_median, self.texture_scale, fitted_on=0)
    limits = settings.CleaningSettings(colour_tolerance=tolerance, max_off_colour_fraction=max_off,
                                       max_texture_z=max_z, min_std=min_std)
    ratios = contamination.score(contamination.observe(images, strokes=False), model,
                                 limits).ratios
    # contamination.CRITERIA: off_colour, fine_detail, hard_edges, written_over, blank
    return {"cell": ratios[:, [1, 2, 4]].max(axis=1), "colour": ratios[:, 0]}


@dataclasses.dataclass
class Scales:
  """Where a score's validation median and pass quantile lie: (score - centre) / spread is 0
  at the median and 1 at the quantile."""
  centre: float
  spread: float

  @classmethod
  def fit(cls, values: np.ndarray, pass_fraction: float) -> "Scales":
    centre = float(np.median(values))
    return cls(centre, max(float(np.quantile(values, pass_fraction)) - centre, 1e-12))

  def __call__(self, values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, np.float64) - self.centre) / self.spread


@dataclasses.dataclass
class OodModel:
  """What `predict` needs to score new images: see the module doc."""
  temperature: float
  confidence: str  # one of CONFIDENCE_SCORES
  feature: str  # one of FEATURE_SCORES, or "" for a model without a known classifier layer
  features: Optional[FeatureModel]
  appearance: AppearanceScorer
  confidence_scales: Scales
  feature_scales: Optional[Scales]
  threshold: float  # of the larger rescaled confidence or feature score
  pass_fraction: float

  def scores(self, logits: np.ndarray, features: Optional[np.ndarray],
             images: np.ndarray, every: bool = False) -> Dict[str, np.ndarray]:
    """The scores of each image: msp, energy, the feature scores, cell, colour, and the
    combined `ood_score` (1 or more: flagged) with its `flag`. The kNN distance (a search of
    the training features) only where it flags, or with `every`."""
    found = {name: confidence_score(name, logits, self.temperature)
             for name in CONFIDENCE_SCORES}
    parts = [self.confidence_scales(found[self.confidence])]
    if self.features is not None and features is not None:
      distances = self.features.class_distances(features)
      found["mahalanobis"] = distances.min(axis=1)
      # An exported model keeps no bank unless it flags with kNN.
      if len(self.features.bank) and (every or self.feature == "knn"):
        found["knn"] = self.features.knn(features)
      found["feature_margin"] = feature_margin(distances, np.argmax(logits, axis=1))
      parts.append(self.feature_scales(found[self.feature]))
    found.update(self.appearance(images))
    model_part = np.max(parts, axis=0) / self.threshold
    found["ood_score"] = np.max([model_part, found["colour"], found["cell"]], axis=0)
    unlike = found["colour"] >= 1.0
    if len(parts) > 1:
      unlike |= parts[1] > parts[0]
    flag = np.where(unlike, "unlike_training", "uncertain")
    flag = np.where(np.maximum(model_part, found["colour"]) >= 1.0, flag, "ok")
    found["flag"] = np.where(found["cell"] >= 1.0, "not_a_cell", flag)
    return found

  def describe(self) -> dict:
    return {"temperature": self.temperature, "confidence_score": self.confidence,
            "feature_score": self.feature or None, "pass_fraction": self.pass_fraction,
            "confidence_scales": dataclasses.asdict(self.confidence_scales),
            "feature_scales": (dataclasses.asdict(self.feature_scales)
                               if self.feature_scales else None),
            "threshold": self.threshold,
            "knn_k": self.features.k if self.features else None,
            "knn_bank": len(self.features.bank) if self.features else 0}


def fit(train_features, train_labels, val_logits, val_features, train_images, *,
        num_classes: int, temperature: float, confidence: str, feature: str,
        pass_fraction: float, k: int, cleaning_settings) -> OodModel:
  """The OodModel of a run: the feature model and the appearance fitted on training images,
  the scales and the threshold on validation images."""
  features = None
  if feature and train_features is not None:
    features = fit_features(train_features, train_labels, num_classes, k)
  confidence_scales = Scales.fit(confidence_score(confidence, val_logits, temperature),
                                 pass_fraction)
  parts = [confidence_scales(confidence_score(confidence, val_logits, temperature))]
  feature_scales = None
  if features is not None:
    feature_scales = Scales.fit(features.score(feature, val_features), pass_fraction)
    parts.append(feature_scales(features.score(feature, val_features)))
  threshold = max(float(np.quantile(np.max(parts, axis=0), pass_fraction)), 1e-12)
  return OodModel(temperature, confidence, feature if features is not None else "", features,
                  AppearanceScorer.fit(train_images, cleaning_settings), confidence_scales,
                  feature_scales, threshold, pass_fraction)


def to_bytes(model: OodModel) -> bytes:
  """The model as an .npz (arrays and plain numbers only: no pickled objects)."""
  arrays = {"temperature": model.temperature, "confidence": model.confidence,
            "feature": model.feature, "threshold": model.threshold,
            "pass_fraction": model.pass_fraction,
            "confidence_scales": [model.confidence_scales.centre, model.confidence_scales.spread],
            "gamut_distance": model.appearance.gamut_distance,
            "texture_median": model.appearance.texture_median,
            "texture_scale": model.appearance.texture_scale,
            "appearance_limits": model.appearance.limits}
  if model.features is not None:
    arrays.update(means=model.features.means, precision=model.features.precision,
                  bank=model.features.bank.astype(np.float32), k=model.features.k,
                  feature_scales=[model.feature_scales.centre, model.feature_scales.spread])
  out = io.BytesIO()
  np.savez_compressed(out, **arrays)
  return out.getvalue()


def for_export(model: OodModel) -> OodModel:
  """The model an exported file carries: without the kNN bank (thousands of training images'
  features) unless kNN is the feature score it flags with."""
  if model.features is None or model.feature == "knn":
    return model
  empty = np.zeros((0, model.features.bank.shape[1]))
  return dataclasses.replace(model, features=dataclasses.replace(model.features, bank=empty))


def from_bytes(data: bytes) -> OodModel:
  """An OodModel written by `to_bytes`; ValueError for anything else."""
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
      a = {name: z[name] for name in z.files}
    features, feature_scales = None, None
    if "means" in a:
      features = FeatureModel(a["means"], a["precision"], a["bank"].astype(np.float64),
                              int(a["k"]))
      feature_scales = Scales(*map(float, a["feature_scales"]))
    return OodModel(float(a["temperature"]), str(a["confidence"]), str(a["feature"]), features,
                    AppearanceScorer(a["gamut_distance"], a["texture_median"], a["texture_scale"],
                                     a["appearance_limits"]),
                    Scales(*map(float, a["confidence_scales"])), feature_scales,
                    float(a["threshold"]), float(a["pass_fraction"]))
  except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
    raise ValueError(f"{type(e).__name__}: {e}") from None


def from_file(path: str) -> OodModel:
  """An OodModel written by `to_bytes`; a damaged or foreign file is a run_files.DamagedFile."""
  from bloodcell_jax.training import run_files  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      return from_bytes(f.read())
  except (OSError, ValueError) as e:
    raise run_files.damaged(path, str(e)) from None
