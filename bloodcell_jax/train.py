"""The training loop: build data, model and state; restore; iterate; evaluate.

Evaluation, checkpointing, early stopping and logging are small functions the
loop calls. A run resumes from its workdir automatically and, on CPU, ends
bit-for-bit where an uninterrupted run would.
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Optional

import jax
import numpy as np
from clu import periodic_actions
from jax.experimental import multihost_utils

from bloodcell_jax import build, calibration, config_schema, files, freezing, models, optim
from bloodcell_jax import run_outputs, sharding, steps
from bloodcell_jax import workdir as workdir_lib
from bloodcell_jax.checkpoint import Checkpoints, DiskFull
from bloodcell_jax.data import augment, offline, pipeline, splits as splits_lib
from bloodcell_jax.errors import UserError, innermost_line, is_disk_full
from bloodcell_jax.metrics import confusion_from_outputs, summarize_confusion, summarize_outputs
from bloodcell_jax.weights import init_from
from bloodcell_jax.writers import create_writer


class TrainingDiverged(UserError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class LoopState:
  """The loop's own state, saved beside the train state in every checkpoint."""
  step: int = 0
  epoch: int = 0  # completed epochs
  best_value: Optional[float] = None
  best_step: int = -1
  epochs_without_improvement: int = 0
  stopped_early: bool = False
  train_seconds: float = 0.0


def describe_data(data) -> str:
  if data.synthetic:
    return (f"{data.name}: SYNTHETIC embedded default data (procedurally drawn cells, "
            "not real images); pass --config.data.train=PATH for real data")
  extra = [f"{data.num_resized} resized to the configured size" if data.num_resized else "",
           f"{data.num_converted} converted to RGB" if data.num_converted else ""]
  return f"{data.name}: {len(data)} images" + "".join(f", {e}" for e in extra if e)


def _loss_config(config, train_labels, num_classes):
  weights = (splits_lib.balanced_class_weights(train_labels, num_classes)
             if config.loss.class_weights == "balanced" else None)
  return steps.LossConfig(num_classes=num_classes, class_weights=weights,
                          label_smoothing=config.loss.label_smoothing,
                          l1=config.loss.l1, l2=config.loss.l2,
                          regularize=tuple(config.loss.regularize), jsd_weight=config.loss.jsd_weight)


class Evaluator:
  """Runs jitted evaluation over every example of a source exactly once: metrics (each
  epoch's validation) or every example's output (the final evaluation)."""

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
      self._outputs_fns[tta] = steps.jit_outputs_step(self.mesh, model=self.model, tta=tta)
    log_probs, labels = [], []
    for batch in self._batches(source, prefix, augmentation, seed):
      batch_log_probs, batch_labels, mask = (np.asarray(a) for a in
                                             self._outputs_fns[tta](state, batch))
      log_probs.append(batch_log_probs[mask > 0])
      labels.append(batch_labels[mask > 0])
    return np.concatenate(log_probs), np.concatenate(labels)


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


@dataclasses.dataclass
class _Run:
  """What one run builds before its loop: data, functions, and where results go."""
  config: object
  workdir: str
  mesh: object
  data: splits_lib.Splits
  train_source: pipeline.InMemorySource
  val_source: Optional[pipeline.InMemorySource]  # None: no validation set (val_fraction=0)
  train_fn: object
  evaluate: Evaluator
  checkpoints: Checkpoints
  writer: object
  steps_per_epoch: int
  total_steps: int
  weights: dict  # where the weights came from, and how many train
  offline: dict  # the offline augmented copies in the training set
  manifest: dict  # the ids of each split
  provenance: Optional[dict] = None  # recorded in results.json as "sweep"


def run_stages(config, workdir: str, provenance: Optional[dict] = None) -> dict:
  """Runs `config.stages` in name order (each in its own sub-workdir, each starting from the
  previous stage's best checkpoint, head kept), or the config itself when it has none.
  `provenance` (e.g. the sweep a run belongs to) is recorded in results.json as "sweep"."""
  if not config.stages:
    return train_and_evaluate(config, workdir, provenance)
  results, previous = {}, None
  for name in sorted(config.stages):
    stage = config_schema.stage_config(config, config.stages[name])
    with stage.unlocked():
      if previous is not None:
        stage.init.weights, stage.init.head = previous, "keep"
    previous = os.path.join(workdir, name)
    logging.info("stage %s: %s", name, json.dumps(config.stages[name].to_dict(), default=str))
    results[name] = train_and_evaluate(stage, previous, provenance)
  final = dict(results[name], stages=results)
  if jax.process_index() == 0:
    files.write_json(os.path.join(workdir, "results.json"), final)
    if config.eval.report:
      run_outputs.write_report(workdir)
  return final


def _initial_weights(config, state, mesh, tx):
  """Replaces the fresh parameters with `config.init.weights`'; returns (state, summary)."""
  source = config.init.weights
  spec = models.get_spec(config.model.name)
  if not source:
    # Loud for models that have pretrained weights to start from.
    log = logging.warning if spec.pretrained else logging.info
    log("no config.init.weights: training %s from scratch (random initialisation)",
        config.model.name)
    return state, {"from": None}
  fresh = jax.tree.map(np.asarray, {"params": state.params, "batch_stats": state.batch_stats})
  variables, summary = init_from.merge(
      fresh, init_from.load_variables(source, config.model.name, model_args=config.model),
      spec.head, config.init.head == "keep", source)
  logging.info("initialised from %s: %d variables loaded, head %s", source,
               summary["variables_loaded"],
               ", ".join(summary["head_reinitialised"]) + " re-initialised"
               if summary["head_reinitialised"] else "kept")
  replace = lambda s, v: steps.reset_ema(s.replace(
      params=v["params"], batch_stats=v["batch_stats"], opt_state=tx.init(v["params"])))
  state = jax.jit(replace, out_shardings=sharding.replicated(mesh))(state, variables)
  return state, summary


def train_and_evaluate(config, workdir: str, provenance: Optional[dict] = None) -> dict:
  """Trains (or resumes) in `workdir`, evaluates the best checkpoint, returns results."""
  os.makedirs(workdir, exist_ok=True)
  data = splits_lib.load_splits(config.data, config.image_size, config.data.split_seed)
  logging.info("data: %s", describe_data(data.train))
  if data.cleaning:
    logging.info("cleaning removed %d of %d images (%s); report in %s",
                 data.cleaning["num_removed"], data.cleaning["num_input"],
                 ", ".join(f"{k}: {v}" for k, v in data.cleaning["removed"].items()),
                 data.cleaning["report_dir"])
  num_classes = len(data.class_names)
  if data.val is None:
    logging.warning("no validation set (config.data.val_fraction=0): no early stopping, and the "
                    "last epoch's checkpoint is the result")
  manifest = splits_lib.manifest(data)
  workdir_lib.check_identity(workdir, json.loads(config.to_json_best_effort()), manifest,
                             warn=jax.process_index() == 0)

  data, offline_summary = _with_offline_copies(config, data, workdir)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, "config.batch_size",
                            micro_batches=config.grad_accum_steps)
  sharding.check_batch_size(config.eval_batch_size, "config.eval_batch_size")
  if config.batch_size > len(data.train):
    raise UserError(f"config.batch_size={config.batch_size}: larger than the training set "
                    f"({len(data.train)} images); expected at most {len(data.train)}")
  steps_per_epoch = -(-len(data.train) // config.batch_size)
  total_steps = config.num_epochs * steps_per_epoch
  model, tx_factory, labels = build.model_and_optimizer(config, num_classes, steps_per_epoch,
                                                        total_steps)
  state, tx = steps.create_train_state(model, tx_factory, jax.random.PRNGKey(config.seed),
                                       config.image_size, mesh,
                                       ema=config.train.ema_decay > 0)
  state, weights = _initial_weights(config, state, mesh, tx)
  weights["trainable_parameters"], weights["frozen_parameters"] = freezing.count(labels,
                                                                                 state.params)
  logging.info("%s: %d trainable, %d frozen parameters", config.model.name,
               weights["trainable_parameters"], weights["frozen_parameters"])
  run = _Run(
      config=config, workdir=workdir, mesh=mesh, data=data,
      train_source=pipeline.InMemorySource(data.train),
      val_source=pipeline.InMemorySource(data.val) if data.val is not None else None,
      train_fn=steps.jit_train_step(
          mesh, model=model, tx=tx,
          learning_rate_fn=optim.learning_rate_schedule(config.optim, steps_per_epoch,
                                                        total_steps),
          loss_config=_loss_config(config, data.train.labels, num_classes),
          grad_accum_steps=config.grad_accum_steps, ema_decay=config.train.ema_decay),
      evaluate=Evaluator(model, mesh, config.eval_batch_size, data.class_names),
      checkpoints=Checkpoints(workdir, keep=config.train.keep_checkpoints),
      writer=create_writer(workdir), steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      weights=weights, offline=offline_summary, manifest=manifest, provenance=provenance)
  try:
    return _resume_train_evaluate(run, state)
  except Exception as error:  # pylint: disable=broad-except
    if not is_disk_full(error):
      raise
    raise DiskFull(f"{workdir}: no space left on the device ({innermost_line(error)}); the "
                   "newest complete checkpoint is kept: free some space and rerun the same "
                   "command to resume") from None
  finally:  # also on errors: Orbax's background threads must stop before the interpreter.
    # With an error on its way, closing may raise it again (a full disk): keep the first.
    with contextlib.suppress(Exception) if sys.exc_info()[0] else contextlib.nullcontext():
      run.checkpoints.close()
      run.writer.close()


def _with_offline_copies(config, data, workdir: str):
  """The splits with `config.data.offline_copies` augmented copies added to the training set."""
  spec = config.data.offline_augment or augment.per_image_part(config.augment.train,
                                                              "config.augment.train")
  train, summary = offline.with_copies(data.train, config.data.offline_copies, spec, config.seed,
                                       os.path.join(workdir, "offline_augmentation"))
  return dataclasses.replace(data, train=train), summary


def _resume_train_evaluate(run: _Run, state) -> dict:
  loop = LoopState()
  restored = run.checkpoints.restore_latest(state)
  if restored is not None:
    state, meta = restored
    loop = LoopState(**meta)
    logging.info("resumed from %s at step %d (epoch %d)", run.workdir, loop.step, loop.epoch)
  _record_run(run)
  if loop.step == 0:
    run.writer.write_hparams(_flat_hparams(run.config))
  if loop.step < run.total_steps and not loop.stopped_early:
    state = _train_loop(run, state, loop)
  return _final_evaluation(run, state, loop)


def _record_run(run: _Run) -> None:
  """Writes what the workdir holds (config.json, split_manifest.json), once its checkpoints
  are known to fit: a refused rerun leaves the old record."""
  if jax.process_index() == 0:
    files.write_text(os.path.join(run.workdir, "split_manifest.json"), json.dumps(run.manifest))
    files.write_text(os.path.join(run.workdir, "config.json"),
                     run.config.to_json_best_effort(indent=2, sort_keys=True))


def _train_loop(run: _Run, state, loop: LoopState):
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


def _end_epoch(run: _Run, state, loop: LoopState) -> bool:
  """Validates, updates early stopping, checkpoints; True when training should stop.
  Without a validation set every epoch's checkpoint is the newest best."""
  config = run.config
  if run.val_source is None:
    loop.best_step = loop.step
    logging.info("epoch %d step %d (no validation set)", loop.epoch, loop.step)
    run.checkpoints.save(state, dataclasses.asdict(loop), best_score=float(loop.step))
    return False
  summary, _ = run.evaluate(state, run.val_source, "val")
  if state.ema:
    summary.update(run.evaluate(state.with_ema_weights(), run.val_source, "ema_val")[0])
  metric = config.train.early_stopping_metric
  if metric not in summary:
    raise UserError(f"config.train.early_stopping_metric='{metric}': expected one of "
                    f"{', '.join(k for k in summary if not k.startswith('per_class'))}")
  value = summary[metric]
  improved = _is_improvement(value, loop, config)
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
               if state.ema else "", " (best)" if improved else "")
  run.checkpoints.save(state, dataclasses.asdict(loop),
                       best_score=_score(metric, value) if improved else None)
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


def _evaluation_sets(run: _Run) -> list:
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


def _evaluate_outputs(run: _Run, state, prefix: str = ""):
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


def _final_evaluation(run: _Run, state, loop: LoopState) -> dict:
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
    files.write_json(os.path.join(workdir, "results.json"), results)
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
               describe_data(data.train))
  return results


def _flat_hparams(config) -> dict:
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if hasattr(value, "items"):
        visit(name + ".", value)
      else:
        flat[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(
            value, default=str)
  visit("", config)
  return flat

