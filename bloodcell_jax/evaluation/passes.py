"""Evaluation passes: a model's metrics or outputs over every example of a set, exactly once,
on every device and process of the mesh."""

import jax
import numpy as np

from bloodcell_jax.data import pipeline
from bloodcell_jax.evaluation import tta as tta_lib
from bloodcell_jax.evaluation.classification import summarize_confusion
from bloodcell_jax.training import sharding, steps


class EvaluationPasses:
  """Jitted evaluation over every example of a source exactly once: metrics (each epoch's
  validation) or every example's output (the final evaluation)."""

  def __init__(self, model, mesh, batch_size: int, class_names):
    self.model, self.mesh = model, mesh
    self.batch_size, self.class_names = batch_size, class_names
    self.eval_fn = steps.jit_eval_step(mesh, model=model)
    self._outputs_fns = {}

  def _batches(self, source, prefix: str, augmentation: str, seed: int):
    for local in pipeline.eval_batches(
        source, batch_size=self.batch_size, augmentation=augmentation, seed=seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        where=f"{prefix} augmentation"):
      yield sharding.global_batch(local, self.mesh)

  def __call__(self, state, source, prefix: str, augmentation: str = "", seed: int = 0):
    """(metrics named `<prefix>_...`, confusion matrix) over `source`."""
    total = None
    for batch in self._batches(source, prefix, augmentation, seed):
      metrics = self.eval_fn(state, batch)
      total = metrics if total is None else total.merge(metrics)
    computed = total.compute()
    confusion = np.asarray(computed["confusion"])
    summary = summarize_confusion(confusion, self.class_names, prefix)
    summary[f"{prefix}_loss"] = float(computed["loss"])
    return summary, confusion

  def outputs(self, state, source, prefix: str, augmentation: str = "", seed: int = 0,
              tta: str = ""):
    """(log probabilities, labels) of every example of `source`, in order; with `tta`,
    averaged over its views."""
    if tta not in self._outputs_fns:
      self._outputs_fns[tta] = steps.jit_outputs_step(self.mesh, model=self.model,
                                                      views=tta_lib.views_of(tta))
    log_probs, labels = [], []
    for batch in self._batches(source, prefix, augmentation, seed):
      batch_log_probs, batch_labels, mask = (np.asarray(a) for a in
                                             self._outputs_fns[tta](state, batch))
      log_probs.append(batch_log_probs[mask > 0])
      labels.append(batch_labels[mask > 0])
    return np.concatenate(log_probs), np.concatenate(labels)
