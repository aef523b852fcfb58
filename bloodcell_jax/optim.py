"""Optimizers and learning-rate schedules from the config, with layer-wise freezing."""

import optax

from bloodcell_jax import param_rules
from bloodcell_jax.errors import UserError


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int):
  base = config.learning_rate
  name = config.schedule
  if name == "constant":
    return optax.constant_schedule(base)
  if name == "warmup_cosine":
    warmup = int(config.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        init_value=base * config.warmup_start_factor, peak_value=base,
        warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
        end_value=base * config.end_factor)
  if name == "step":
    boundaries = {int(float(e) * steps_per_epoch): config.step_decay_factor
                  for e in str(config.step_decay_epochs).split(",") if e.strip()}
    return optax.piecewise_constant_schedule(base, boundaries)
  raise UserError(f"config.optim.schedule='{name}': expected constant, warmup_cosine or step")


def _base_optimizer(config, schedule, decay_mask):
  name = config.name
  if name == "adam":
    return optax.adam(schedule, b1=config.b1, b2=config.b2)
  if name == "adamw":
    return optax.adamw(schedule, b1=config.b1, b2=config.b2,
                       weight_decay=config.weight_decay, mask=decay_mask)
  if name == "sgd":
    return optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  if name == "lion":
    return optax.lion(schedule, b1=config.b1, b2=config.b2,
                      weight_decay=config.weight_decay, mask=decay_mask)
  raise UserError(f"config.optim.name='{name}': expected adam, adamw, sgd or lion")


def make_optimizer(config, params, steps_per_epoch: int, total_steps: int, freeze_labels=None):
  """The optax chain: clipping, decoupled weight decay, freezing masks.

  `freeze_labels` ("train" / "freeze" per parameter, from
  `freezing.freeze_labels`): frozen parameters get `set_to_zero`: no update,
  no weight decay, and no optimizer state.
  """
  schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
  decay_mask = param_rules.path_mask(params, config.weight_decay_pattern)
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.weight_decay and config.name == "sgd":
    # For plain SGD decoupled decay and an L2 gradient term coincide.
    chain.append(optax.add_decayed_weights(config.weight_decay, mask=decay_mask))
  chain.append(_base_optimizer(config, schedule, decay_mask))
  optimizer = optax.chain(*chain)
  if freeze_labels is not None:
    optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()},
                                      freeze_labels)
  return optimizer, schedule
