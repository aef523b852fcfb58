"""Evaluators: what runs on a trained state, named in `config.evals`.

Each entry of `config.evals` names an evaluator type and its options:

  config.evals.val = dict(type="classification", set="val")
  config.evals.robustness = dict(type="robustness", every_epochs=5, max_images=500)

At the end of training every entry runs on the best checkpoint (and on its weight average,
with keys prefixed `ema_`); an entry with `every_epochs=N` also runs every N epochs on the
current weights, its metrics written to TensorBoard and metrics.jsonl beside the validation
metrics. An evaluator declares the metrics it writes (`Metric`): the results table's columns and
the run report's sections come from those declarations, recorded in results.json.

A new evaluator is a subclass of `Evaluator` registered under a type name, in any module that
is imported before training (a test, a user's script, or this one):

  @EVALUATORS.register("my_metric")
  class MyMetric(Evaluator):
    options = {"set": "val"}
    def metrics(self): return [Metric(f"{self.name}_score", "my score")]
    def __call__(self, context): return {f"{self.name}_score": ...}
"""

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional

import numpy as np

from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import calibration, classification, labelled_set, ood, selective
from bloodcell_jax.registry import Registry

# How a metric reads: higher is better ("accuracy"), lower is better ("error"), or neither.
KINDS = ("accuracy", "error", "value", "count", "seconds")


@dataclasses.dataclass(frozen=True)
class Metric:
  """A number an evaluator writes into results.json under `key`.

  title: its name in the results table and the report.
  kind: one of KINDS (accuracies and errors are shown in percent; the best is bold).
  section: the report section it is shown in.
  table: whether it is a column of the results table (and a card of the report).
  predictions: the prediction file (predictions/<name>.csv) whose probabilities give it, so
    that an ensemble of runs can recompute it from their averaged probabilities ("" if none).
  """
  key: str
  title: str
  kind: str = "accuracy"
  section: str = "Classification"
  table: bool = True
  predictions: str = ""

  def with_prefix(self, prefix: str, title_prefix: str) -> "Metric":
    return dataclasses.replace(
        self, key=prefix + self.key, title=title_prefix + self.title,
        predictions=prefix + self.predictions if self.predictions else "")


@dataclasses.dataclass
class Context:
  """What an evaluator sees: the run's config and data, the state to evaluate, and the
  jitted passes. `outputs` caches every set's outputs, shared by the evaluators of one state."""
  config: object
  data: object  # splits: .train, .val, .test ImageSets (val, test may be None)
  state: object
  passes: object  # evaluation.passes.EvaluationPasses
  prefix: str = ""  # "ema_" for the weight average
  final: bool = True  # False: an evaluation during training
  outputs: Dict[tuple, tuple] = dataclasses.field(default_factory=dict)
  # Per-image outputs to keep as prediction files: {file name: (log probs, labels, image set)}.
  predictions: Dict[str, tuple] = dataclasses.field(default_factory=dict)
  # Other files to keep in the workdir (final evaluation only): {file name: contents}.
  files: Dict[str, bytes] = dataclasses.field(default_factory=dict)

  def image_set(self, name: str):
    return getattr(self.data, name)

  def outputs_of(self, set_name: str, augmentation: str = "", tta: str = ""):
    """(log probabilities, labels) of every image of a set, computed once per context. The
    augmentation is drawn from the split seed: runs differing only in `seed` see the same
    augmented images."""
    key = (set_name, augmentation, tta)
    if key not in self.outputs:
      from bloodcell_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (TF)
      source = pipeline.InMemorySource(getattr(self.data, set_name))
      self.outputs[key] = self.passes.outputs(
          self.state, source, f"{self.prefix}{set_name}", augmentation,
          seed=self.config.data.split_seed, tta=tta)
    return self.outputs[key]

  def temperature(self, set_name: str) -> float:
    """The temperature fitted on a set's outputs (calibration.py), once per context: the
    calibration, selective and ood evaluators share it."""
    key = ("temperature", set_name)
    if key not in self.outputs:
      self.outputs[key] = calibration.fit_temperature(*self.outputs_of(set_name))
    return self.outputs[key]

  def logits_and_features(self, set_name: str, count: int = 0, seed: int = 0,
                          batch_size: int = 256):
    """(image set, logits, penultimate features) of a set, or of a seeded draw of `count` of
    its images, computed once per context; the features are None for a model registered
    without a classifier layer (inference.classifier_layer)."""
    key = ("features", set_name, count, seed, batch_size)
    if key not in self.outputs:
      from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top  (JAX)
      images = self.image_set(set_name)
      if 0 < count < len(images):
        draw = np.random.default_rng(seed).choice(len(images), count, replace=False)
        images = images.subset(np.sort(draw))
      model, layer = self.passes.model, inference.classifier_layer(self.config)
      if layer:
        logits, features = inference.logits_and_features(model, self.state, images.images,
                                                         batch_size, layer)
      else:
        logits = np.log(inference.predict(model, self.state, images.images, batch_size))
        features = None
      self.outputs[key] = (images, logits, features)
    return self.outputs[key]


class Evaluator:
  """One entry of `config.evals`: `options` are the entry's keys besides `type` and
  `every_epochs`, with their defaults; an entry's unknown key is an error."""
  options: Dict[str, object] = {}

  def __init__(self, name: str, entry: dict, config):
    self.name, self.config = name, config
    self.where = f"config.evals.{name}"
    unknown = sorted(set(entry) - set(self.options) - {"type", "every_epochs"})
    if unknown:
      known = ", ".join(["type", "every_epochs", *self.options])
      raise UserError(f"{self.where}.{unknown[0]}: not an option of the "
                      f"{entry['type']} evaluator (its options: {known})")
    self.every_epochs = entry.get("every_epochs", 0)
    if not isinstance(self.every_epochs, int) or self.every_epochs < 0:
      raise UserError(f"{self.where}.every_epochs={self.every_epochs!r}: expected an integer "
                      ">= 0 (0: only after training)")
    self.opts = {**self.options, **{k: v for k, v in entry.items() if k in self.options}}
    if self.opts.get("set", "val") not in ("train", "val", "test"):
      raise UserError(f"{self.where}.set={self.opts['set']!r}: expected train, val or test")

  def applies(self, data) -> bool:
    """Whether the run has what this evaluator needs (e.g. a test set)."""
    del data
    return True

  def metrics(self) -> List[Metric]:
    raise NotImplementedError

  def __call__(self, context: Context) -> dict:
    raise NotImplementedError


EVALUATORS = Registry("evaluator", where="config.evals.<name>.type")


def _set_title(name: str) -> str:
  return (name.replace("_", " ") + " ").replace("val ", "val. ").strip()


@EVALUATORS.register("classification")
class Classification(Evaluator):
  """Accuracy, balanced accuracy, per-class recall and loss on a set (`set`), optionally
  augmented (`augment`: a key of config.augment, e.g. "eval_strong"), and again with the
  config's test-time augmentation (config.eval.tta, keys ending in `_tta`) when `tta`. Keeps
  every image's probabilities (predictions/<name>.csv) and, for an unaugmented set, the
  confusion matrix."""
  options = {"set": "val", "augment": "", "tta": True}

  def __init__(self, name: str, entry: dict, config):
    super().__init__(name, entry, config)
    self.augmentation = self._augmentation()

  def applies(self, data) -> bool:
    return getattr(data, self.opts["set"], None) is not None

  def _augmentation(self) -> str:
    key = self.opts["augment"]
    if not key:
      return ""
    if key not in self.config.augment:
      raise UserError(f"{self.where}.augment='{key}': expected a key of config.augment "
                      f"({', '.join(self.config.augment.keys())})")
    return self.config.augment[key]

  def _suffixes(self) -> list:
    tta = self.config.eval.tta if self.opts["tta"] else ""
    return [("", "")] + [("_tta", tta)] * bool(tta)

  def metrics(self) -> List[Metric]:
    declared, title = [], _set_title(self.name)
    for suffix, _ in self._suffixes():
      tta = " TTA" if suffix else ""
      declared += [
          Metric(f"{self.name}_accuracy{suffix}", f"{title} accuracy{tta}",
                 predictions=self.name + suffix),
          Metric(f"{self.name}_balanced_accuracy{suffix}", f"{title} balanced accuracy{tta}",
                 table=not suffix),
          Metric(f"{self.name}_loss{suffix}", f"{title} loss{tta}", kind="value", table=False)]
    return declared

  def __call__(self, context: Context) -> dict:
    results = {}
    image_set = context.image_set(self.opts["set"])
    augmentation = self.augmentation
    for suffix, views in self._suffixes():
      log_probs, labels = context.outputs_of(self.opts["set"], augmentation, views)
      results.update(classification.summarize_outputs(
          log_probs, labels, image_set.class_names, f"{context.prefix}{self.name}", suffix))
      context.predictions[f"{context.prefix}{self.name}{suffix}"] = (log_probs, labels,
                                                                     image_set)
      if context.final and not augmentation and not suffix and not context.prefix:
        results[f"{self.name}_confusion"] = classification.confusion_from_outputs(log_probs,
                                                                                  labels)
    return results


@EVALUATORS.register("calibration")
class Calibration(Evaluator):
  """Temperature scaling fitted on a set's outputs (`set`, the validation set by default), with
  the expected calibration error and the negative log-likelihood before and after. The fitted
  temperature is what `predict --calibrated` applies."""
  options = {"set": "val"}

  def applies(self, data) -> bool:
    return getattr(data, self.opts["set"], None) is not None

  def metrics(self) -> List[Metric]:
    s = self.opts["set"]
    section = "Calibration"
    return [Metric(f"{s}_ece", f"{_set_title(s)} ECE", kind="error", section=section),
            Metric(f"{s}_ece_calibrated", f"{_set_title(s)} ECE calibrated", kind="error",
                   section=section),
            Metric("temperature", "temperature", kind="value", section=section, table=False),
            Metric(f"{s}_nll", f"{_set_title(s)} NLL", kind="value", section=section,
                   table=False),
            Metric(f"{s}_nll_calibrated", f"{_set_title(s)} NLL calibrated", kind="value",
                   section=section, table=False)]

  def __call__(self, context: Context) -> dict:
    s = self.opts["set"]
    log_probs, labels = context.outputs_of(s)
    temperature = context.temperature(s)
    return {f"{context.prefix}temperature": temperature,
            **calibration.summary(log_probs, labels, temperature, f"{context.prefix}{s}")}


@EVALUATORS.register("robustness")
class Robustness(Evaluator):
  """The robustness benchmark (bloodcell_jax/evaluation/robustness.py) on a set: accuracy
  clean and under each shift at severities 1 to 5, with fixed placements (`seed`); `shifts`
  (comma-separated, empty: all) and `max_images` (the first N images of the set, 0: all)
  bound its cost when it runs every few epochs."""
  options = {"set": "val", "shifts": "", "max_images": 0, "seed": 0, "batch_size": 256}

  def applies(self, data) -> bool:
    return getattr(data, self.opts["set"], None) is not None

  def metrics(self) -> List[Metric]:
    n = self.name
    return [Metric(f"{n}_mean_corruption_accuracy", "mean corruption accuracy",
                   section="Robustness"),
            Metric(f"{n}_clean_accuracy", "clean accuracy (robustness set)",
                   section="Robustness", table=False),
            Metric(f"{n}_worst_family_accuracy", "worst shift family accuracy",
                   section="Robustness"),
            Metric(f"{n}_relative_drop", "relative drop under shift", kind="error",
                   section="Robustness", table=False)]

  def __call__(self, context: Context) -> dict:
    # The benchmark draws its shifts with TensorFlow and imports the shift registry.
    from bloodcell_jax.augment import shifts  # pylint: disable=g-import-not-at-top
    from bloodcell_jax.evaluation import inference, robustness  # pylint: disable=g-import-not-at-top
    image_set = context.image_set(self.opts["set"])
    count = self.opts["max_images"] or len(image_set)
    names = [n.strip() for n in str(self.opts["shifts"]).split(",") if n.strip()]
    for name in names:
      shifts.SHIFTS.get(name, f"{self.where}.shifts")
    model, state = context.passes.model, context.state
    predict = lambda images: inference.predict(model, state, images, self.opts["batch_size"])
    found = robustness.evaluate(predict, image_set.images[:count], image_set.labels[:count],
                                names or shifts.SHIFTS.names(), self.opts["seed"])
    p = f"{context.prefix}{self.name}"
    return {f"{p}_mean_corruption_accuracy": found["mean_corruption_accuracy"],
            f"{p}_clean_accuracy": found["clean"],
            f"{p}_worst_family_accuracy": found["per_family"][found["worst_family"]],
            f"{p}_relative_drop": found["relative_drop"],
            f"{p}_per_family": found["per_family"]}


@EVALUATORS.register("labelled_folder")
class LabelledFolder(Evaluator):
  """Another lab's labelled images (`path`: an ImageFolder or .npz holding some of the run's
  classes, often the white cells alone): balanced accuracy over the classes present with the
  model choosing among all the run's classes, and with its choice restricted to `classes`
  (comma-separated; "": the classes present), accuracy and per-class recall both ways
  (labelled_set.py). `tta`: with config.eval.tta. The folder is read once per run."""
  options = {"path": "", "classes": "", "batch_size": 256, "tta": False}

  def __init__(self, name: str, entry: dict, config):
    super().__init__(name, entry, config)
    path = self.opts["path"]
    if not isinstance(path, str) or not path:
      raise UserError(f"{self.where}.path: required (a labelled ImageFolder or .npz of another "
                      "lab, e.g. path=\"../shared/data/xsite_dev/lisc\")")
    if not os.path.exists(path):
      raise UserError(f"{self.where}.path={path}: no such file or directory")
    batch_size = self.opts["batch_size"]
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
      raise UserError(f"{self.where}.batch_size={batch_size!r}: expected an integer >= 1")
    classes = self.opts["classes"]
    classes = classes.split(",") if isinstance(classes, str) else list(classes)
    self.classes = [str(c).strip() for c in classes if str(c).strip()]
    self._data = None

  def metrics(self) -> List[Metric]:
    n, title, section = self.name, _set_title(self.name), "Other labs"
    tta = " TTA" if self.opts["tta"] and self.config.eval.tta else ""
    return [Metric(f"{n}_balanced_accuracy", f"{title} balanced accuracy{tta}", section=section),
            Metric(f"{n}_restricted_balanced_accuracy",
                   f"{title} balanced accuracy, restricted{tta}", section=section),
            Metric(f"{n}_accuracy", f"{title} accuracy{tta}", section=section, table=False)]

  def _images(self, class_names):
    if self._data is None:
      from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top  (JAX)
      if self.classes:
        labelled_set.restriction(class_names, self.classes, f"{self.where}.classes")
      self._data = inference.read_labelled(self.opts["path"], self.config.image_size,
                                           list(class_names), f"{self.where}.path")
    return self._data

  def __call__(self, context: Context) -> dict:
    from bloodcell_jax.evaluation import inference  # pylint: disable=g-import-not-at-top  (JAX)
    class_names = list(context.data.train.class_names)
    data = self._images(class_names)
    tta = self.config.eval.tta if self.opts["tta"] else ""
    probabilities = inference.predict(context.passes.model, context.state, data.images,
                                      self.opts["batch_size"], tta)
    summary = labelled_set.summarize(probabilities, data.labels, class_names,
                                     self.classes or None, f"{self.where}.classes")
    p = f"{context.prefix}{self.name}"
    return {f"{p}_balanced_accuracy": summary["balanced_accuracy"],
            f"{p}_restricted_balanced_accuracy": summary["restricted_balanced_accuracy"],
            f"{p}_accuracy": summary["accuracy"],
            f"{p}_per_class_recall": summary["per_class_recall"],
            f"{p}_restricted_per_class_recall": summary["restricted_per_class_recall"]}


@EVALUATORS.register("selective")
class SelectivePrediction(Evaluator):
  """Selective prediction on a set (selective.py): accuracy on the 80, 90 and 95% of its
  images the model is surest of, and the area under the risk-coverage curve. `rank`:
  feature_margin (ood.feature_margin, with class means and covariance from `train_images`
  training images, a seeded draw as the ood evaluator's) or confidence (the top class's
  probability at the temperature fitted on the set); a model without a registered classifier
  layer is ranked by confidence. Writes which one ranked."""
  options = {"set": "val", "rank": "feature_margin", "train_images": 5000, "seed": 0}
  RANKS = ("feature_margin", "confidence")

  def __init__(self, name: str, entry: dict, config):
    super().__init__(name, entry, config)
    if self.opts["rank"] not in self.RANKS:
      raise UserError(f"{self.where}.rank={self.opts['rank']!r}: expected one of "
                      f"{', '.join(self.RANKS)}")

  def applies(self, data) -> bool:
    return getattr(data, self.opts["set"], None) is not None

  def metrics(self) -> List[Metric]:
    s, section = self.opts["set"], "Selective prediction"
    title = _set_title(s)
    return [Metric(f"{s}_accuracy_at_{round(100 * c)}",
                   f"{title} accuracy at {round(100 * c)}% coverage", section=section,
                   table=c == 0.9) for c in selective.COVERAGES] + [
        Metric(f"{s}_aurc", f"{title} risk-coverage area", kind="error", section=section)]

  def _feature_margin(self, context: Context):
    """(minus the feature margin, whether each image is right), or None without features."""
    train, _, train_features = context.logits_and_features(
        "train", self.opts["train_images"], self.opts["seed"])
    if train_features is None:
      return None
    images, logits, features = context.logits_and_features(self.opts["set"])
    means = ood.fit_features(train_features, train.labels, len(train.class_names))
    predicted = np.argmax(logits, axis=1)
    return (-ood.feature_margin(means.class_distances(features), predicted),
            predicted == images.labels)

  def __call__(self, context: Context) -> dict:
    ranked = self._feature_margin(context) if self.opts["rank"] == "feature_margin" else None
    rank = "confidence" if ranked is None else "feature_margin"
    if ranked is None:
      log_probs, labels = context.outputs_of(self.opts["set"])
      scaled = calibration.scaled_log_probabilities(log_probs,
                                                    context.temperature(self.opts["set"]))
      ranked = scaled.max(axis=1), log_probs.argmax(axis=1) == labels
    prefix = f"{context.prefix}{self.opts['set']}"
    return {**selective.summary(*ranked, prefix), f"{prefix}_selective_rank": rank}


@EVALUATORS.register("ood")
class OutOfDistribution(Evaluator):
  """The run's out-of-distribution model (ood.py), fitted after training on `train_images`
  training images (a seeded draw; 0: all) with its thresholds on the validation set, kept as
  ood.npz for `predict`. `confidence_score`: msp | energy; `feature_score`: mahalanobis | knn
  (with `k`); `pass_fraction` of the validation images pass. Writes the validation images
  flagged and the model's description."""
  options = {"train_images": 5000, "pass_fraction": 0.95, "confidence_score": "msp",
             "feature_score": "mahalanobis", "k": 10, "batch_size": 256, "seed": 0}

  def __init__(self, name: str, entry: dict, config):
    super().__init__(name, entry, config)
    for key, allowed in (("confidence_score", ood.CONFIDENCE_SCORES),
                         ("feature_score", ood.FEATURE_SCORES)):
      if self.opts[key] not in allowed:
        raise UserError(f"{self.where}.{key}={self.opts[key]!r}: expected one of "
                        f"{', '.join(allowed)}")
    if not 0.5 <= self.opts["pass_fraction"] < 1.0:
      raise UserError(f"{self.where}.pass_fraction={self.opts['pass_fraction']!r}: expected a "
                      "fraction in [0.5, 1)")
    if self.every_epochs:
      raise UserError(f"{self.where}.every_epochs={self.every_epochs}: the out-of-distribution "
                      "model is fitted once, after training (every_epochs=0)")

  def applies(self, data) -> bool:
    return data.val is not None

  def metrics(self) -> List[Metric]:
    return [Metric("val_flagged", "val. flagged as not to trust", kind="error",
                   section="Out-of-distribution")]

  def __call__(self, context: Context) -> dict:
    from bloodcell_jax.data.cleaning import settings as cleaning_settings  # pylint: disable=g-import-not-at-top
    train, _, train_features = context.logits_and_features(
        "train", self.opts["train_images"], self.opts["seed"], self.opts["batch_size"])
    val, val_logits, val_features = context.logits_and_features(
        "val", batch_size=self.opts["batch_size"])
    fitted = ood.fit(train_features, train.labels, val_logits, val_features,
                     train.images, num_classes=len(train.class_names),
                     temperature=context.temperature("val"),
                     confidence=self.opts["confidence_score"],
                     feature=self.opts["feature_score"], pass_fraction=self.opts["pass_fraction"],
                     k=self.opts["k"], cleaning_settings=cleaning_settings.from_mapping(
                         self.config.data.get("cleaning", {})))
    context.files[f"{context.prefix}{ood.FILE}"] = ood.to_bytes(fitted)
    flags = fitted.scores(val_logits, val_features, val.images)["flag"]
    p = context.prefix
    return {f"{p}val_flagged": float(np.mean(flags != "ok")),
            f"{p}ood": {**fitted.describe(), "fitted_on_train_images": len(train),
                        "val_flags": {f: int(np.sum(flags == f)) for f in ood.FLAGS}}}


def entries(config) -> List[tuple]:
  """(name, entry dict) of `config.evals`, in the order the config wrote them."""
  evals = config.get("evals") or {}
  order = list(json.loads(evals.to_json()) if hasattr(evals, "to_json") else evals)
  return [(name, dict(evals[name])) for name in order]


def build(config) -> List[Evaluator]:
  """The evaluators `config.evals` names; a bad type or option is a one-line UserError."""
  built = []
  for name, entry in entries(config):
    where = f"config.evals.{name}"
    if "type" not in entry:
      raise UserError(f"{where}: expected a dict with a 'type' (one of "
                      f"{', '.join(EVALUATORS.names())})")
    built.append(EVALUATORS.get(entry["type"], f"{where}.type")(name, entry, config))
  return built


def declared_metrics(evaluators: List[Evaluator], ema: bool) -> List[Metric]:
  """Every metric the evaluators write, then the same of the weight average (prefix ema_)."""
  declared = [m for e in evaluators for m in e.metrics()]
  if ema:
    declared += [m.with_prefix("ema_", "EMA ") for m in declared]
  return declared


def run_all(evaluators: List[Evaluator], make_context: Callable[[str], Context],
            prefixes=("",), when: Optional[Callable[[Evaluator], bool]] = None):
  """Runs each evaluator (that `when` accepts) for each prefix's state; returns (metrics,
  {file name: (log probs, labels, image set)} to keep as prediction files, {file name:
  contents} of the other files to keep)."""
  metrics, kept, files = {}, {}, {}
  for prefix in prefixes:
    context = make_context(prefix)
    for evaluator in evaluators:
      if when is None or when(evaluator):
        metrics.update(evaluator(context))
    kept.update(context.predictions)
    files.update(context.files)
  return metrics, kept, files


def as_records(metrics: List[Metric]) -> List[dict]:
  return [dataclasses.asdict(m) for m in metrics]


def from_records(records) -> List[Metric]:
  """Metrics recorded in a results.json; malformed records are skipped."""
  found = []
  for record in records or ():
    try:
      found.append(Metric(**record))
    except TypeError:
      continue
  return found


def scalar_metrics(metrics: dict) -> Dict[str, float]:
  """The plain numbers of an evaluation, for TensorBoard and metrics.jsonl."""
  return {k: float(v) for k, v in metrics.items()
          if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}
