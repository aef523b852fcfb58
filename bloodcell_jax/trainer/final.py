"""The final evaluation: the evaluators of `config.evals` on the best checkpoint (and on its
weight average), and what the run leaves in its workdir."""

import logging
import os

import jax
import numpy as np

from bloodcell_jax import atomic
from bloodcell_jax.evaluation import evaluators as evaluators_lib
from bloodcell_jax.evaluation import explain
from bloodcell_jax.results import run_outputs
from bloodcell_jax.trainer.context import LoopState, RunContext
from bloodcell_jax.training import run_files


def _worst_errors_explained(run: RunContext, state, val_outputs):
  """Grad-CAM pictures (explain.overlay) of the most confident validation errors, for the
  report; None without a report, a validation set or errors."""
  if val_outputs is None or not run.config.eval.report:
    return None
  log_probs, labels, val = val_outputs
  worst = run_outputs.worst_errors(log_probs, labels)
  if not len(worst):
    return None
  return np.stack(explain.pictures(run.passes.model, state, val.images[worst],
                                   log_probs.argmax(axis=1)[worst],
                                   run.config.model.get("framing", "none"), scale=1))


def evaluate(run: RunContext, state, loop: LoopState) -> dict:
  """Runs the evaluators of `config.evals` on the best checkpoint (and on its weight
  average, if kept); writes results.json and what the run leaves beside it."""
  config, workdir, data = run.config, run.workdir, run.data
  restored = run.checkpoints.restore_best(state)
  if restored is not None:
    state, _ = restored
  elif loop.best_step >= 0:
    logging.warning("no readable checkpoint in %s: evaluating the newest state (step %d) "
                    "instead of the best (step %d)", run.checkpoints.best.directory, loop.step,
                    loop.best_step)
  evaluators = [e for e in run.evaluators if e.applies(data)]
  states = {"": state, "ema_": state.with_ema_weights() if state.ema else None}
  metrics, kept, files = evaluators_lib.run_all(
      evaluators, lambda prefix: evaluators_lib.Context(config, data, states[prefix],
                                                        run.passes, prefix),
      prefixes=("", "ema_") if state.ema else ("",))
  declared = evaluators_lib.declared_metrics(evaluators, ema=bool(state.ema))
  results = {
      "val_accuracy": None, "augmented_val_accuracy": None,  # without a validation set
      **metrics,
      "balanced_val_accuracy": metrics.get("val_balanced_accuracy"),
      "test_accuracy": metrics.get("test_accuracy"),
      "metrics": evaluators_lib.as_records(declared),
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
      **({"self_training": run.self_training} if run.self_training else {}),
      **({"guard": loop.guard} if loop.guard else {}),
  }
  explained = _worst_errors_explained(run, state, kept.get("val"))  # every process: a jit
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(workdir, run_files.RESULTS), results)
    run_outputs.write(workdir, run, results, kept, files, loop.best_step, explained)
  run.writer.write_scalars(loop.step, {k: v for k, v in results.items()
                                       if k.endswith("accuracy") and isinstance(v, float)})
  if loop.guard:
    logging.info("guard: the result is %s (epochs below val_accuracy %.4f: %s)",
                 f"step {loop.best_step}" if loop.best_step else "the starting weights",
                 loop.guard["floor"], loop.guard["rejected_epochs"] or "none")
  shown = lambda key: "n/a" if results.get(key) is None else f"{results[key]:.4f}"
  logging.info("results: val_accuracy %s, augmented_val_accuracy %s, test_accuracy %s%s%s, "
               "val ECE %s -> %s at temperature %s (%s)",
               shown("val_accuracy"), shown("augmented_val_accuracy"), shown("test_accuracy"),
               f", val_accuracy_tta {shown('val_accuracy_tta')}" if config.eval.tta else "",
               f", ema_val_accuracy {shown('ema_val_accuracy')}" if state.ema else "",
               shown("val_ece"), shown("val_ece_calibrated"), shown("temperature"),
               data.train.description())
  return results
