"""A run: its data, model, state and functions built from a config, then trained (or resumed) and
evaluated; staged fine-tuning runs its stages in order."""

import contextlib
import dataclasses
import json
import logging
import os
import sys
from typing import Optional

import jax
import numpy as np

from bloodcell_jax import atomic, models
from bloodcell_jax.augment import ops as augment
from bloodcell_jax.config import flat, stages
from bloodcell_jax.data import offline, pipeline
from bloodcell_jax.data import splits as splits_lib
from bloodcell_jax.errors import UserError, innermost_line, is_disk_full
from bloodcell_jax.evaluation import evaluators as evaluators_lib
from bloodcell_jax.evaluation.passes import EvaluationPasses
from bloodcell_jax.results import run_outputs
from bloodcell_jax.trainer import final
from bloodcell_jax.trainer import loop as loop_lib
from bloodcell_jax.trainer.context import LoopState, RunContext
from bloodcell_jax.training import freezing, model_and_optimizer, optim, run_files, sharding, steps
from bloodcell_jax.training import workdir as workdir_lib
from bloodcell_jax.training.checkpoint import Checkpoints, DiskFull
from bloodcell_jax.training.writers import create_writer
from bloodcell_jax.weights import init_from


def _compute_dtype(model, config) -> str:
  """The model's compute dtype for the log, and why where `auto` chose it."""
  dtype = getattr(model, "dtype", None)
  name = np.dtype(dtype).name if dtype is not None else "its layers' dtypes"
  return f"{name} (model.dtype=auto)" if config.model.get("dtype") == "auto" else name


def run_stages(config, workdir: str, provenance: Optional[dict] = None) -> dict:
  """Runs `config.stages` in name order (each in its own sub-workdir, each starting from the
  previous stage's best checkpoint, head kept), or the config itself when it has none.
  `provenance` (e.g. the sweep a run belongs to) is recorded in results.json as "sweep"."""
  if not config.stages:
    return train_and_evaluate(config, workdir, provenance)
  results, previous = {}, None
  for name in sorted(config.stages):
    stage = stages.overlay(config, config.stages[name])
    with stage.unlocked():
      if previous is not None:
        stage.init.weights, stage.init.head = previous, "keep"
    previous = os.path.join(workdir, name)
    logging.info("stage %s: %s", name, json.dumps(config.stages[name].to_dict(), default=str))
    results[name] = train_and_evaluate(stage, previous, provenance)
  combined = dict(results[name], stages=results)
  if jax.process_index() == 0:
    atomic.write_json(os.path.join(workdir, run_files.RESULTS), combined)
    if config.eval.report:
      run_outputs.write_report(workdir)
  return combined


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
  data, manifest = _load_data(config, workdir)
  data, offline_summary = _with_offline_copies(config, data, workdir)
  data, self_training, chosen = _with_pseudo_labels(config, data)
  if chosen is not None:  # recorded beside the splits, for review
    manifest = dict(manifest, pseudo_labelled={"source": chosen.name, "ids": chosen.ids.tolist(),
                                               "labels": chosen.labels.tolist()})
  _check_batch_sizes(config, len(data.train))
  run, state = _build_run(config, workdir, data, manifest, offline_summary, provenance,
                          self_training)
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


def _load_data(config, workdir: str):
  """The splits (cleaned if asked) and their manifest, checked against what the workdir holds."""
  data = splits_lib.load_splits(config.data, config.image_size, config.data.split_seed)
  logging.info("data: %s", data.train.description())
  if data.cleaning:
    logging.info("cleaning removed %d of %d images (%s); report in %s",
                 data.cleaning["num_removed"], data.cleaning["num_input"],
                 ", ".join(f"{k}: {v}" for k, v in data.cleaning["removed"].items()),
                 data.cleaning["report_dir"])
  if data.val is None:
    logging.warning("no validation set (config.data.val_fraction=0): no early stopping, and the "
                    "last epoch's checkpoint is the result")
  manifest = splits_lib.manifest(data)
  workdir_lib.check_identity(workdir, json.loads(config.to_json_best_effort()), manifest,
                             warn=jax.process_index() == 0)
  return data, manifest


def _check_batch_sizes(config, num_train: int) -> None:
  """Batch sizes that the devices divide and the training set fills."""
  sharding.check_batch_size(config.batch_size, "config.batch_size",
                            micro_batches=config.grad_accum_steps)
  sharding.check_batch_size(config.eval_batch_size, "config.eval_batch_size")
  if config.batch_size > num_train:
    raise UserError(f"config.batch_size={config.batch_size}: larger than the training set "
                    f"({num_train} images); expected at most {num_train}")


def _build_run(config, workdir: str, data, manifest: dict, offline_summary: dict,
               provenance: Optional[dict], self_training: Optional[dict]):
  """(the run's context, its initial train state): model, optimizer, initial weights, the
  jitted steps, checkpoints and writers."""
  num_classes = len(data.class_names)
  mesh = sharding.make_mesh()
  steps_per_epoch = -(-len(data.train) // config.batch_size)
  total_steps = config.num_epochs * steps_per_epoch
  model, tx_factory, labels = model_and_optimizer.build(config, num_classes, steps_per_epoch,
                                                       total_steps)
  state, tx = steps.create_train_state(model, tx_factory, jax.random.PRNGKey(config.seed),
                                       config.image_size, mesh,
                                       ema=config.train.ema_decay > 0)
  state, weights = _initial_weights(config, state, mesh, tx)
  weights["trainable_parameters"], weights["frozen_parameters"] = freezing.count(labels,
                                                                                 state.params)
  logging.info("%s: %d trainable, %d frozen parameters, computing in %s", config.model.name,
               weights["trainable_parameters"], weights["frozen_parameters"],
               _compute_dtype(model, config))
  run = RunContext(
      config=config, workdir=workdir, mesh=mesh, data=data,
      train_source=pipeline.InMemorySource(data.train),
      val_source=pipeline.InMemorySource(data.val) if data.val is not None else None,
      train_fn=steps.jit_train_step(
          mesh, model=model, tx=tx,
          learning_rate_fn=optim.learning_rate_schedule(config.optim, steps_per_epoch,
                                                        total_steps),
          loss_config=_loss_config(config, data.train.labels, num_classes),
          grad_accum_steps=config.grad_accum_steps, ema_decay=config.train.ema_decay),
      passes=EvaluationPasses(model, mesh, config.eval_batch_size, data.class_names),
      evaluators=evaluators_lib.build(config),
      checkpoints=Checkpoints(workdir, keep=config.train.keep_checkpoints),
      writer=create_writer(workdir), steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      weights=weights, offline=offline_summary, manifest=manifest, provenance=provenance,
      self_training=self_training)
  return run, state


def _with_offline_copies(config, data, workdir: str):
  """The splits with `config.data.offline_copies` augmented copies added to the training set."""
  spec = config.data.offline_augment or augment.per_image_part(config.augment.train,
                                                              "config.augment.train")
  train, summary = offline.with_copies(data.train, config.data.offline_copies, spec, config.seed,
                                       os.path.join(workdir, "offline_augmentation"))
  return dataclasses.replace(data, train=train), summary


def _with_pseudo_labels(config, data):
  """(splits, summary, pseudo-labelled ImageSet): the splits with the new lab's images that
  `config.init.weights` labels confidently added to the training set (config.self_training;
  evaluation/adaptation.py), each repeated so that they make up about `share` of it. Summary and
  set are None when self-training is off."""
  settings = config.get("self_training")
  if not settings or not settings.unlabelled:
    return data, None, None
  if not config.init.weights or not os.path.isdir(config.init.weights):
    raise UserError(f"config.self_training.unlabelled needs config.init.weights to be a trained "
                    f"run's workdir (it labels the images), got {config.init.weights!r}")
  from bloodcell_jax.evaluation import adaptation  # pylint: disable=g-import-not-at-top
  chosen, summary = adaptation.pseudo_labelled(
      config.init.weights, settings.unlabelled, config.image_size, data.class_names,
      tuple(settings.classes), settings.min_confidence, settings.class_fraction)
  repeats = max(1, round(settings.share * len(data.train)
                         / ((1.0 - settings.share) * len(chosen))))
  added = chosen.subset(np.tile(np.arange(len(chosen)), repeats))
  summary["repeats"] = repeats
  logging.info("self-training: %d of %d images of %s pseudo-labelled (%s), each %d times in "
               "the training set", summary["num_pseudo_labelled"], summary["num_images"],
               settings.unlabelled, ", ".join(f"{k} {v}" for k, v in summary["per_class"].items()),
               repeats)
  train = dataclasses.replace(
      data.train, images=np.concatenate([data.train.images, added.images]),
      labels=np.concatenate([data.train.labels, added.labels]),
      ids=np.concatenate([data.train.ids, added.ids]))
  return dataclasses.replace(data, train=train), summary, chosen


def _resume_train_evaluate(run: RunContext, state) -> dict:
  loop = LoopState()
  restored = run.checkpoints.restore_latest(state)
  if restored is not None:
    state, meta = restored
    loop = LoopState(**meta)
    logging.info("resumed from %s at step %d (epoch %d)", run.workdir, loop.step, loop.epoch)
  _record_run(run)
  if loop.step == 0:
    run.writer.write_hparams(_hparams(run.config))
  if loop.step < run.total_steps and not loop.stopped_early:
    state = loop_lib.train(run, state, loop)
  return final.evaluate(run, state, loop)


def _record_run(run: RunContext) -> None:
  """Writes what the workdir holds (config.json, split_manifest.json), once its checkpoints
  are known to fit: a refused rerun leaves the old record."""
  if jax.process_index() == 0:
    atomic.write_text(os.path.join(run.workdir, run_files.SPLIT_MANIFEST), json.dumps(run.manifest))
    atomic.write_text(os.path.join(run.workdir, run_files.CONFIG),
                     run.config.to_json_best_effort(indent=2, sort_keys=True))


def _loss_config(config, train_labels, num_classes):
  weights = (splits_lib.balanced_class_weights(train_labels, num_classes)
             if config.loss.class_weights == "balanced" else None)
  return steps.LossConfig(num_classes=num_classes, class_weights=weights,
                          label_smoothing=config.loss.label_smoothing,
                          l1=config.loss.l1, l2=config.loss.l2,
                          regularize=tuple(config.loss.regularize),
                          jsd_weight=config.loss.jsd_weight)


def _hparams(config) -> dict:
  """The config's leaves as TensorBoard hyper-parameters (lists and tuples as JSON)."""
  plain = lambda value: isinstance(value, (int, float, str, bool))
  return {key: value if plain(value) else json.dumps(value, default=str)
          for key, value in flat.leaves(config).items()}
