"""What a config builds before training: the model and its optimizer, with freezing applied.

TensorFlow-free, so the benchmarks and accelerator scripts build exactly what
training builds.
"""

from bloodcell_jax import freezing, models, optim, steps


def model_and_optimizer(config, num_classes: int, steps_per_epoch: int, total_steps: int):
  """(model, optimizer factory, freeze labels or None).

  Frozen parameters get no update and no weight decay; BatchNorm in frozen
  layers runs in inference mode unless `config.model.frozen_bn_mode="train"`.
  """
  model = models.build_model(config, num_classes)
  labels = freezing.freeze_labels(config, steps.param_shapes(model, config.image_size))
  model = freezing.apply_frozen_batchnorm(model, config, labels)
  tx_factory = lambda params: optim.make_optimizer(config.optim, params, steps_per_epoch,
                                                   total_steps, labels)[0]
  return model, tx_factory, labels
