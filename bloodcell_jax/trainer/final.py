"""The final evaluation: the best checkpoint (and its weight average) on every evaluation set,
with and without TTA, the fitted temperature, and what the run leaves in its workdir."""

import logging
import os

import jax

from bloodcell_jax import atomic
from bloodcell_jax.data import pipeline
from bloodcell_jax.evaluation import calibration
from bloodcell_jax.results import run_outputs
from bloodcell_jax.trainer.context import LoopState, RunContext
from bloodcell_jax.training import run_files
from bloodcell_jax.training.metrics import confusion_from_outputs, summarize_outputs


def _evaluation_sets(run: RunContext) -> list:
  """(name, source, augmentation, image set) of each set the final evaluation covers. The
  augmented validation images are drawn from the split seed, so that runs differing only
  in `seed` are compared (and ensembled) on the same images."""
  sets = []
  if run.val_source is not None:
    sets += [("val", run.val_source, "", run.data.val),
             ("augmented_val", run.val_source, run.config.augment.eval_strong, run.data.val)]
  if run.data.test is not None:
    sets.append(("test", pipeline.InMemorySource(run.data.test), "", run.data.test))
  return sets


def _evaluate_outputs(run: RunContext, state, prefix: str = ""):
  """Metrics of `state` on every evaluation set, with and without `config.eval.tta` (keys
  `<prefix><set>_<metric>[_tta]`), and the outputs behind them {`<prefix><set>[_tta]`:
  (log probabilities, labels)}."""
  tta = run.config.eval.tta
  metrics, outputs = {}, {}
  for name, source, augmentation, _ in _evaluation_sets(run):
    for suffix, views in [("", "")] + [("_tta", tta)] * bool(tta):
      log_probs, labels = run.evaluate.outputs(state, source, f"{prefix}{name}", augmentation,
                                               seed=run.config.data.split_seed, tta=views)
      outputs[f"{prefix}{name}{suffix}"] = (log_probs, labels)
      metrics.update(summarize_outputs(log_probs, labels, run.data.class_names,
                                       f"{prefix}{name}", suffix))
  return metrics, outputs


def _calibrate(outputs: dict, prefix: str) -> dict:
  """Temperature scaling fitted on the validation outputs of `prefix`'s weights, with the
  ECE and NLL before and after; {} without a validation set."""
  if f"{prefix}val" not in outputs:
    return {}
  log_probs, labels = outputs[f"{prefix}val"]
  temperature = calibration.fit_temperature(log_probs, labels)
  return {f"{prefix}temperature": temperature,
          **calibration.summary(log_probs, labels, temperature, f"{prefix}val")}


def evaluate(run: RunContext, state, loop: LoopState) -> dict:
  """Evaluates the best checkpoint (and its weight average, if kept) on validation,
  augmented validation and test; fits the temperature; writes what the run leaves."""
  config, workdir, data = run.config, run.workdir, run.data
  restored = run.checkpoints.restore_best(state)
  if restored is not None:
    state, _ = restored
  elif loop.best_step >= 0:
    logging.warning("no readable checkpoint in %s: evaluating the newest state (step %d) "
                    "instead of the best (step %d)", run.checkpoints.best.directory, loop.step,
                    loop.best_step)
  metrics, outputs = _evaluate_outputs(run, state)
  metrics.update(_calibrate(outputs, ""))
  if state.ema:
    ema_metrics, ema_outputs = _evaluate_outputs(run, state.with_ema_weights(), "ema_")
    metrics.update(ema_metrics, **_calibrate(ema_outputs, "ema_"))
    outputs.update(ema_outputs)
  confusions = {name: confusion_from_outputs(*outputs[name]) for name in ("val", "test")
                if name in outputs}
  results = {
      "val_accuracy": None, "augmented_val_accuracy": None,  # without a validation set
      **metrics,
      "balanced_val_accuracy": metrics.get("val_balanced_accuracy"),
      "test_accuracy": metrics.get("test_accuracy"),
      **{f"{name}_confusion": confusion for name, confusion in confusions.items()},
      "num_train": len(data.train), "num_val": len(data.val) if data.val is not None else 0,
      "num_test": len(data.test) if data.test is not None else 0,
      "train_seconds": loop.train_seconds, "steps": loop.step, "epochs": loop.epoch,
      "best_step": loop.best_step, "stopped_early": loop.stopped_early,
      "class_names": list(data.class_names),
      "dataset": data.train.describe(),
      "model": config.model.name,
      "weights": run.weights,
      "offline_augmentation": run.offline,
      "cleaning": data.cleaning,
      **({"sweep": run.provenance} if run.provenance else {}),
  }
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(workdir, run_files.RESULTS), results)
    run_outputs.write(workdir, run, results, outputs, confusions, loop.best_step)
  run.writer.write_scalars(loop.step, {k: v for k, v in results.items()
                                       if k.endswith("accuracy") and isinstance(v, float)})
  shown = lambda key: "n/a" if results.get(key) is None else f"{results[key]:.4f}"
  logging.info("results: val_accuracy %s, augmented_val_accuracy %s, test_accuracy %s%s%s, "
               "val ECE %s -> %s at temperature %s (%s)",
               shown("val_accuracy"), shown("augmented_val_accuracy"), shown("test_accuracy"),
               f", val_accuracy_tta {shown('val_accuracy_tta')}" if config.eval.tta else "",
               f", ema_val_accuracy {shown('ema_val_accuracy')}" if state.ema else "",
               shown("val_ece"), shown("val_ece_calibrated"), shown("temperature"),
               data.train.description())
  return results
