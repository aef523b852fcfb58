"""What every config key may hold, checked in one place before any data is read.

Each key of `configs/default.py` (and of the recipes) has a rule: a range, a set of
choices (the names of a registry, where the choices are extension points) or a form; the
model's constructor arguments are checked by building the model, which owns them. Cross-key
rules follow. A value that breaks a rule is a UserError that names `config.<key>`, the value
and what was expected. Imports no TensorFlow, and JAX only when a config is checked.
"""

from typing import Callable, Optional

from bloodcell_jax.config import flat, stages
from bloodcell_jax.errors import UserError
from bloodcell_jax.registry import Registry
from bloodcell_jax.training import param_rules

# A rule returns None when the value is fine, else what was expected.
Rule = Callable[[object], Optional[str]]


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_at_least(low: int) -> Rule:
  return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= low \
      else f"an integer >= {low}"


def number_in(low: float, high: float = float("inf"), *, open_low=False, open_high=False) -> Rule:
  def check(value):
    if _is_number(value) and (value > low if open_low else value >= low) and (
        value < high if open_high else value <= high):
      return None
    return (f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
            if high != float("inf") else f"a number {'>' if open_low else '>='} {low}")
  return check


def one_of(*choices) -> Rule:
  shown = ", ".join(str(c) if c != "" else "''" for c in choices)
  return lambda v: None if v in choices else f"one of {shown}"


def registered(registry: Callable[[], Registry], *also) -> Rule:
  """One of `also` or of the names registered in `registry()`, which is called when a value
  is checked: the modules that fill the registries import JAX, this one stays light."""
  return lambda v: one_of(*also, *registry().names())(v)


def _optimizers() -> Registry:
  from bloodcell_jax.training import optim  # pylint: disable=g-import-not-at-top  (JAX)
  return optim.OPTIMIZERS


def _schedules() -> Registry:
  from bloodcell_jax.training import optim  # pylint: disable=g-import-not-at-top  (JAX)
  return optim.SCHEDULES


def _tta_views() -> Registry:
  from bloodcell_jax.evaluation import tta  # pylint: disable=g-import-not-at-top  (JAX)
  return tta.VIEWS


def text(value) -> Optional[str]:
  return None if isinstance(value, str) else "a string"


def flag(value) -> Optional[str]:
  return None if isinstance(value, bool) else "True or False"


def epochs_list(value) -> Optional[str]:
  try:
    [float(e) for e in str(value).split(",") if e.strip()]
  except ValueError:
    return "epochs separated by commas, e.g. '10,20'"
  return None


def class_names(value) -> Optional[str]:
  names = list(value) if isinstance(value, (list, tuple)) else None
  if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) < len(names):
    return "a list of distinct, non-empty class names"
  return None


def rules(convert) -> Rule:
  """Per-parameter rules (bloodcell_jax.param_rules) whose values `convert` accepts."""
  def check(value):
    try:
      param_rules.parse(value, "rules", convert)
    except UserError as e:
      return "(regex, value) rules: " + str(e).split(": ", 1)[-1]
    return None
  return check


MODEL = "model"  # keys checked by building the model

RULES = {
    "seed": int_at_least(0),
    "num_epochs": int_at_least(1),
    "batch_size": int_at_least(1),
    "grad_accum_steps": int_at_least(1),
    "eval_batch_size": int_at_least(1),
    "image_size": int_at_least(16),  # four 2x poolings of the CNN
    "data.train": text, "data.val": text, "data.test": text,
    "data.val_fraction": number_in(0.0, 1.0, open_high=True),
    "data.split_seed": int_at_least(0),
    "data.class_names": class_names,
    "data.folders_use_class_names": flag,
    "data.synthetic_size": int_at_least(16),
    "data.clean": flag,
    "data.cleaning.cache_dir": text,
    "data.cleaning.keep_file": text,
    "data.cleaning.keep_conflicts": flag,
    "data.cleaning.keep_leaked": flag,
    "data.cleaning.near_min_similarity": number_in(0.0, 1.0),
    "data.cleaning.near_radius": number_in(0.0, open_low=True),
    "data.cleaning.near_tables": int_at_least(1),
    "data.cleaning.max_shift": int_at_least(0),
    "data.cleaning.colour_coverage": number_in(0.0, 1.0, open_low=True),
    "data.cleaning.colour_fit_fraction": number_in(0.0, 1.0, open_low=True),
    "data.cleaning.colour_tolerance": number_in(0.0),
    "data.cleaning.max_off_colour_fraction": number_in(0.0, 1.0),
    "data.cleaning.max_texture_z": number_in(0.0, open_low=True),
    "data.cleaning.min_std": number_in(0.0),
    "data.cleaning.max_written_z": number_in(0.0, open_low=True),
    "data.cleaning.writing_fit_images": int_at_least(0),
    "data.cleaning.contact_sheets": flag,
    "data.offline_copies": int_at_least(0),
    "data.offline_augment": text,
    "self_training.unlabelled": text,
    "self_training.classes": lambda v: None if not v else class_names(v),
    "self_training.min_confidence": number_in(0.0, 1.0),
    "self_training.class_fraction": number_in(0.0, 1.0, open_low=True),
    "self_training.share": number_in(0.0, 1.0, open_low=True, open_high=True),
    "model.name": text,  # a registered model: checked by building it, as its other keys
    "augment.train": text,
    "augment.eval_strong": text,
    "init.weights": text,
    "init.head": one_of("reinit", "keep"),
    "init.frozen_bn_mode": one_of("inference", "train"),
    "loss.class_weights": one_of("balanced", "none"),
    "loss.label_smoothing": number_in(0.0, 1.0, open_high=True),
    "loss.l1": number_in(0.0), "loss.l2": number_in(0.0),
    "loss.regularize": rules(param_rules.multiplier),
    "loss.jsd_weight": number_in(0.0),
    "optim.name": registered(_optimizers),
    "optim.learning_rate": number_in(0.0),
    "optim.b1": number_in(0.0, 1.0, open_high=True),
    "optim.b2": number_in(0.0, 1.0, open_high=True),
    "optim.momentum": number_in(0.0, 1.0, open_high=True),
    "optim.nesterov": flag,
    "optim.weight_decay": number_in(0.0),
    "optim.weight_decay_rules": rules(param_rules.multiplier),
    "optim.lr_multipliers": rules(param_rules.multiplier),
    "optim.grad_clip_norm": number_in(0.0),
    "optim.schedule": registered(_schedules),
    "optim.warmup_epochs": number_in(0.0),
    "optim.warmup_start_factor": number_in(0.0, 1.0),
    "optim.end_factor": number_in(0.0, 1.0),
    "optim.step_decay_epochs": epochs_list,
    "optim.step_decay_factor": number_in(0.0, open_low=True),
    "optim.freeze": rules(param_rules.choice("freeze", "train")),
    "optim.freeze_keras_layers": int_at_least(-10**6),  # < 0: all but the last -N
    "train.early_stopping_metric": one_of(
        *(f"{ema}val_{m}" for ema in ("", "ema_") for m in ("accuracy", "balanced_accuracy",
                                                           "loss"))),
    "train.early_stopping_patience": int_at_least(0),
    "train.early_stopping_min_delta": number_in(0.0),
    "train.log_every_steps": int_at_least(1),
    "train.checkpoint_every_steps": int_at_least(0),
    "train.keep_checkpoints": int_at_least(1),
    "train.ema_decay": number_in(0.0, 1.0, open_high=True),
    "train.max_val_drop": lambda v: None if v == -1 or number_in(0.0, 1.0)(v) is None
    else "-1 (off) or a number in [0.0, 1.0]",
    "eval.tta": registered(_tta_views, ""),  # "": no test-time augmentation
    "eval.report": flag,
}


def _cross_key_errors(config) -> list:
  errors = []
  if config.batch_size % config.grad_accum_steps:
    errors.append(f"config.batch_size={config.batch_size}: expected a multiple of "
                  f"config.grad_accum_steps={config.grad_accum_steps}")
  metric = config.train.early_stopping_metric
  if metric.startswith("ema_") and not config.train.ema_decay:
    errors.append(f"config.train.early_stopping_metric={metric}: needs a weight average "
                  "(config.train.ema_decay > 0)")
  guard = config.train.get("max_val_drop", -1.0)
  if guard >= 0 and not config.data.val and not config.data.val_fraction:
    errors.append(f"config.train.max_val_drop={guard}: needs a validation set "
                  "(config.data.val_fraction > 0 or config.data.val)")
  if config.optim.weight_decay and config.optim.name == "adam":
    errors.append(f"config.optim.weight_decay={config.optim.weight_decay}: decoupled decay "
                  "needs optim.name=adamw (or use loss.l2 for the study's L2 term)")
  return errors


def errors(config) -> list:
  """Every broken rule of `config` (stages aside), one line each."""
  found = []
  for key, value in flat.leaves(config).items():
    if key.startswith(("stages.", "evals.")) or (key.startswith("model.") and key not in RULES):
      continue
    rule = RULES.get(key)
    expected = rule(value) if rule else "no such key (see configs/default.py)"
    if expected:
      found.append(f"config.{key}={value!r}: expected {expected}")
  if not found:
    found += _cross_key_errors(config)
  if not found:
    from bloodcell_jax import models  # pylint: disable=g-import-not-at-top  (JAX)
    from bloodcell_jax.evaluation import evaluators  # pylint: disable=g-import-not-at-top
    for check in (lambda: models.check_buildable(config, num_classes=2),
                  lambda: evaluators.build(config)):
      try:
        check()
      except UserError as e:
        found.append(str(e))
  return found


def validate(config) -> None:
  """Raises a UserError for the first broken rule of `config` and of each of its stages
  (a stage's keys overlay the config)."""
  for name, stage in [("", config)] + sorted(config.stages.items()):
    if name:
      stage = stages.overlay(config, stage)
    found = errors(stage)
    if found:
      where = f" (stage {name})" if name else ""
      more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
      raise UserError(f"{found[0]}{where}{more}")
