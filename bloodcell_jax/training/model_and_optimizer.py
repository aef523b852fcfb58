"""What a config builds before training: the model and its optimizer, with freezing applied.

TensorFlow-free, so the benchmarks and accelerator scripts build exactly what
training builds.
"""

from bloodcell_jax import models
from bloodcell_jax.training import freezing, losses, optim, steps


def build(config, num_classes: int, steps_per_epoch: int, total_steps: int):
  """(model, optimizer factory, freeze labels or None).

  Frozen parameters get no update and no weight decay; BatchNorm in frozen
  layers runs in inference mode unless `config.init.frozen_bn_mode="train"`. Every
  per-parameter rule list is resolved here, so one that misses a parameter fails at start.
  """
  model = models.build_model(config, num_classes)
  params, batch_stats = steps.variable_shapes(model, config.image_size)
  labels = freezing.freeze_labels(config, params)
  losses.penalty_multipliers(params, config.loss.regularize)
  model = freezing.apply_frozen_batchnorm(model, config, labels, batch_stats)
  tx_factory = lambda params: optim.make_optimizer(config.optim, params, steps_per_epoch,
                                                   total_steps, labels)[0]
  return model, tx_factory, labels
