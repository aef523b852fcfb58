"""The step loop: steps until the end or early stopping, with validation, checkpoints, logging,
progress and preemption at step boundaries. A run resumes from its newest checkpoint and, on
CPU, ends bit-for-bit where an uninterrupted run would."""

import dataclasses
import logging
import signal
import time
from typing import Optional

import jax
import numpy as np
from clu import periodic_actions
from jax.experimental import multihost_utils

from bloodcell_jax.data import pipeline
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import evaluators as evaluators_lib
from bloodcell_jax.trainer.context import LoopState, RunContext
from bloodcell_jax.training import sharding
from bloodcell_jax.training.checkpoint import Checkpoints


class TrainingDiverged(UserError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def _score(metric: str, value: float) -> float:
  """The early-stopping metric turned higher-is-better (losses are negated)."""
  return -value if metric.endswith("loss") else value


def _is_improvement(value, loop: LoopState, config) -> bool:
  if loop.best_value is None:
    return True
  metric = config.train.early_stopping_metric
  return _score(metric, value) - _score(metric, loop.best_value) > \
      config.train.early_stopping_min_delta


class _StopRequest:
  """Preemption (SIGTERM) as a save at a step boundary that every process agrees on.

  One process: a handler sets a flag that the next step boundary sees. Several
  processes: JAX's preemption sync manager (started by jax.distributed.initialize)
  hears SIGTERM on any process and names one step, the same on every process, at
  which all of them save; a Python handler here would hide the signal from it.
  """

  def __init__(self):
    self._signalled = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread
        self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step`; call it at every step, on every process."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train(run: RunContext, state, loop: LoopState):
  """Steps until the end or early stopping; updates `loop` in place; returns the state."""
  config = run.config
  log_every = max(1, config.train.log_every_steps)
  ckpt_every = config.train.checkpoint_every_steps
  report_progress = periodic_actions.ReportProgress(num_train_steps=run.total_steps,
                                                    writer=run.writer, every_steps=log_every)
  batches = pipeline.train_batches(
      run.train_source, seed=config.seed, batch_size=config.batch_size, start_step=loop.step,
      num_steps=run.total_steps, augmentation=config.augment.train,
      views=2 if config.loss.jsd_weight else 0,
      process_index=jax.process_index(), process_count=jax.process_count())
  if loop.step == 0 and config.train.get("max_val_drop", -1.0) >= 0 and run.val_source:
    _start_guard(run, state, loop)
  progress = _Progress(loop.step, run.total_steps, config.batch_size)
  accumulated = None
  started = time.perf_counter() - loop.train_seconds
  with _StopRequest() as stop_request:
    for step in range(loop.step + 1, run.total_steps + 1):
      state, metrics = run.train_fn(state, sharding.global_batch(next(batches), run.mesh))
      accumulated = metrics if accumulated is None else accumulated.merge(metrics)
      report_progress(step)
      loop.step = step
      end_of_epoch = step % run.steps_per_epoch == 0 or step == run.total_steps
      if step % log_every == 0 or end_of_epoch:
        summary = _check_finite(accumulated.compute(), step, run.checkpoints)
        run.writer.write_scalars(step, {f"train_{k}": v for k, v in summary.items()})
        progress.log(step, summary)
        accumulated = None
      loop.train_seconds = time.perf_counter() - started
      stopping = stop_request.reached(step)
      if end_of_epoch:
        loop.epoch = -(-step // run.steps_per_epoch)
        _evaluate_during_training(run, state, loop)
        if _end_epoch(run, state, loop):
          break
      elif (ckpt_every and step % ckpt_every == 0) or stopping:
        run.checkpoints.save(state, dataclasses.asdict(loop))
      if stopping:
        logging.warning("SIGTERM: saved step %d in %s; exiting to be resumed", step,
                        run.workdir)
        run.checkpoints.wait()
        raise SystemExit(0)
  run.checkpoints.wait()
  return state


def _check_finite(summary: dict, step: int, checkpoints: Checkpoints) -> dict:
  summary = {k: float(v) for k, v in summary.items()}
  if not np.isfinite(summary["loss"]):
    last = checkpoints.latest.latest_step()
    kept = (f"the last good checkpoint (step {last}) is kept in {checkpoints.latest.directory}"
            if last is not None else "no checkpoint had been saved yet")
    raise TrainingDiverged(
        f"training loss is {summary['loss']} at step {step}; {kept}. Lower "
        "config.optim.learning_rate or set config.optim.grad_clip_norm")
  return summary


def _evaluate_during_training(run: RunContext, state, loop: LoopState) -> None:
  """Runs the evaluators due this epoch (`every_epochs`) on the current weights; their
  metrics go to the run's writers (TensorBoard, metrics.jsonl)."""
  due = lambda e: e.every_epochs and loop.epoch % e.every_epochs == 0 and e.applies(run.data)
  if not any(due(e) for e in run.evaluators):
    return
  metrics, _, _ = evaluators_lib.run_all(
      run.evaluators, lambda prefix: evaluators_lib.Context(run.config, run.data, state,
                                                            run.passes, prefix, final=False),
      when=due)
  scalars = evaluators_lib.scalar_metrics(metrics)
  run.writer.write_scalars(loop.step, scalars)
  logging.info("epoch %d step %d: %s", loop.epoch, loop.step,
               ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))


def _start_guard(run: RunContext, state, loop: LoopState) -> None:
  """Measures the starting weights on the validation set and keeps them as the result until an
  epoch stays within config.train.max_val_drop of their accuracy (see `_guarded_score`)."""
  summary, _ = run.passes(state, run.val_source, "val")
  start, drop = summary["val_accuracy"], run.config.train.max_val_drop
  loop.guard = {"start_val_accuracy": start, "max_val_drop": drop, "floor": start - drop,
                "rejected_epochs": []}
  loop.best_step, loop.best_value = 0, summary.get(run.config.train.early_stopping_metric, start)
  run.writer.write_scalars(0, {"val_accuracy": start, "val_loss": summary["val_loss"]})
  logging.info("guard: the starting weights' val_accuracy %.4f; an epoch below %.4f is never "
               "the result", start, start - drop)
  run.checkpoints.save(state, dataclasses.asdict(loop), best_score=0.0)


def _guarded_score(value: float, loop: LoopState) -> Optional[float]:
  """With a guard, the newest epoch within the floor is the result (its step is its score; the
  starting weights' is 0); an epoch below the floor is not, and is recorded."""
  if value >= loop.guard["floor"]:
    return float(loop.step)
  loop.guard["rejected_epochs"].append(loop.epoch)
  return None


def _end_epoch(run: RunContext, state, loop: LoopState) -> bool:
  """Validates, updates early stopping, checkpoints; True when training should stop.
  Without a validation set every epoch's checkpoint is the newest best."""
  config = run.config
  if run.val_source is None:
    loop.best_step = loop.step
    logging.info("epoch %d step %d (no validation set)", loop.epoch, loop.step)
    run.checkpoints.save(state, dataclasses.asdict(loop), best_score=float(loop.step))
    return False
  summary, _ = run.passes(state, run.val_source, "val")
  if state.ema:
    summary.update(run.passes(state.with_ema_weights(), run.val_source, "ema_val")[0])
  metric = config.train.early_stopping_metric
  if metric not in summary:
    raise UserError(f"config.train.early_stopping_metric='{metric}': expected one of "
                    f"{', '.join(k for k in summary if not k.startswith('per_class'))}")
  value = summary[metric]
  if loop.guard:
    best_score = _guarded_score(summary["val_accuracy"], loop)
    improved = best_score is not None
  else:
    improved = _is_improvement(value, loop, config)
    best_score = _score(metric, value) if improved else None
  if improved:
    loop.best_value, loop.best_step, loop.epochs_without_improvement = value, loop.step, 0
  else:
    loop.epochs_without_improvement += 1
  patience = config.train.early_stopping_patience
  loop.stopped_early = bool(patience) and loop.epochs_without_improvement >= patience
  scalars = {k: v for k, v in summary.items() if not isinstance(v, dict)}
  run.writer.write_scalars(loop.step, {**scalars, "epoch": loop.epoch})
  run.writer.flush()
  logging.info("epoch %d step %d: val_accuracy %.4f, balanced %.4f, val_loss %.4f%s%s",
               loop.epoch, loop.step, summary["val_accuracy"], summary["val_balanced_accuracy"],
               summary["val_loss"], f", ema_val_accuracy {summary['ema_val_accuracy']:.4f}"
               if state.ema else "", (" (the result so far)" if loop.guard else " (best)")
               if improved else (" (below the guard's floor)" if loop.guard else ""))
  run.checkpoints.save(state, dataclasses.asdict(loop), best_score=best_score)
  if loop.stopped_early:
    logging.info("early stopping: no improvement of %s for %d epochs; best at step %d",
                 metric, patience, loop.best_step)
  return loop.stopped_early


class _Progress:
  """Console progress: images/s over the last interval and the ETA."""

  def __init__(self, start_step: int, total_steps: int, batch_size: int):
    self.total_steps, self.batch_size = total_steps, batch_size
    self.last_step, self.last_time = start_step, time.perf_counter()

  def log(self, step: int, summary: dict):
    now = time.perf_counter()
    rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
    eta = (self.total_steps - step) * self.batch_size / max(rate, 1e-9)
    logging.info("step %d/%d: loss %.4f, accuracy %.4f, lr %.2e | %.1f images/s, ETA %s",
                 step, self.total_steps, summary["loss"], summary["accuracy"],
                 summary["learning_rate"], rate, _format_seconds(eta))
    self.last_step, self.last_time = step, now


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"
