"""What one run builds before its loop (RunContext) and the loop's own state (LoopState)."""

import dataclasses
from typing import Optional

from bloodcell_jax.data import pipeline
from bloodcell_jax.data import splits as splits_lib
from bloodcell_jax.evaluation.passes import EvaluationPasses
from bloodcell_jax.training.checkpoint import Checkpoints


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
  # With config.train.max_val_drop >= 0: the starting weights' validation accuracy, the floor
  # an epoch must reach to become the result, and the epochs that did not.
  guard: Optional[dict] = None


@dataclasses.dataclass
class RunContext:
  """What one run builds before its loop: data, functions, and where results go."""
  config: object
  workdir: str
  mesh: object
  data: splits_lib.Splits
  train_source: pipeline.InMemorySource
  val_source: Optional[pipeline.InMemorySource]  # None: no validation set (val_fraction=0)
  train_fn: object
  passes: EvaluationPasses
  evaluators: list  # of config.evals (bloodcell_jax/evaluation/evaluators.py)
  checkpoints: Checkpoints
  writer: object
  steps_per_epoch: int
  total_steps: int
  weights: dict  # where the weights came from, and how many train
  offline: dict  # the offline augmented copies in the training set
  manifest: dict  # the ids of each split
  provenance: Optional[dict] = None  # recorded in results.json as "sweep"
  self_training: Optional[dict] = None  # the pseudo-labelled images added (config.self_training)
