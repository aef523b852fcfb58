"""Optimizers and learning-rate schedules from the config, with layer-wise freezing.

`OPTIMIZERS` and `SCHEDULES` are the registries `config.optim.name` and `config.optim.schedule`
choose from; a registered function builds its part of the optax chain from `config.optim`.
"""

import jax
import optax

from bloodcell_jax.registry import Registry
from bloodcell_jax.training import param_rules

# name -> schedule(config.optim, steps_per_epoch, total_steps): the learning rate per step.
SCHEDULES = Registry("schedule", where="config.optim.schedule")


@SCHEDULES.register("constant")
def constant(config, steps_per_epoch: int, total_steps: int):
  del steps_per_epoch, total_steps
  return optax.constant_schedule(config.learning_rate)


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(config, steps_per_epoch: int, total_steps: int):
  base = config.learning_rate
  warmup = int(config.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(
      init_value=base * config.warmup_start_factor, peak_value=base,
      warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
      end_value=base * config.end_factor)


@SCHEDULES.register("step")
def step(config, steps_per_epoch: int, total_steps: int):
  del total_steps
  boundaries = {int(float(e) * steps_per_epoch): config.step_decay_factor
                for e in str(config.step_decay_epochs).split(",") if e.strip()}
  return optax.piecewise_constant_schedule(config.learning_rate, boundaries)


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int):
  return SCHEDULES.get(config.schedule)(config, steps_per_epoch, total_steps)


def _per_parameter(transform, factors):
  """`transform(factor)` applied to each parameter with its own factor (one optax
  transformation per distinct factor, through multi_transform)."""
  distinct = sorted(set(jax.tree.leaves(factors)))
  if len(distinct) == 1:
    return transform(distinct[0])
  labels = jax.tree.map(str, factors)
  return optax.multi_transform({str(f): transform(f) for f in distinct}, labels)


def _decay(weight_decay: float, factors):
  """Decoupled weight decay weight_decay * factor * w (factor 0: none)."""
  return _per_parameter(lambda f: optax.add_decayed_weights(weight_decay * f) if f * weight_decay
                        else optax.identity(), factors)


# name -> optimizer(config.optim, decay): the optimizer's own scaling, with the decoupled weight
# decay `decay` (an optax transformation) where it has one, before the learning rate.
OPTIMIZERS = Registry("optimizer", where="config.optim.name")


@OPTIMIZERS.register("adam")
def adam(config, decay):
  del decay  # none: the schema refuses optim.weight_decay with adam (loss.l2 is its L2 term)
  return optax.scale_by_adam(b1=config.b1, b2=config.b2)


@OPTIMIZERS.register("adamw")
def adamw(config, decay):
  return optax.chain(optax.scale_by_adam(b1=config.b1, b2=config.b2), decay)


@OPTIMIZERS.register("sgd")
def sgd(config, decay):
  # For plain SGD decoupled decay and an L2 gradient term coincide.
  return optax.chain(decay, optax.trace(decay=config.momentum, nesterov=config.nesterov)
                     if config.momentum else optax.identity())


@OPTIMIZERS.register("lion")
def lion(config, decay):
  return optax.chain(optax.scale_by_lion(b1=config.b1, b2=config.b2), decay)


def make_optimizer(config, params, steps_per_epoch: int, total_steps: int, freeze_labels=None):
  """The optax chain: clipping, the optimizer, decoupled weight decay, the learning rate
  (times per-parameter multipliers), freezing masks. The same chains as optax.adamw,
  optax.sgd and optax.lion, with per-parameter factors from `config.weight_decay_rules` and
  `config.lr_multipliers` (see `param_rules`).

  `freeze_labels` ("train" / "freeze" per parameter, from
  `freezing.freeze_labels`): frozen parameters get `set_to_zero`: no update,
  no weight decay, and no optimizer state.
  """
  schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
  decay_factors = param_rules.resolve(
      params, param_rules.parse(config.weight_decay_rules, "config.optim.weight_decay_rules",
                                param_rules.multiplier),
      "config.optim.weight_decay_rules", default=1.0)
  rate_factors = param_rules.resolve(
      params, param_rules.parse(config.lr_multipliers, "config.optim.lr_multipliers",
                                param_rules.multiplier),
      "config.optim.lr_multipliers", default=1.0)
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(OPTIMIZERS.get(config.name)(config, _decay(config.weight_decay, decay_factors)))
  chain.append(optax.scale_by_learning_rate(schedule))
  # Factors of 1 everywhere (the default) add no per-step multiply.
  chain.append(_per_parameter(lambda f: optax.scale(f) if f != 1.0 else optax.identity(),
                              rate_factors))
  optimizer = optax.chain(*chain)
  if freeze_labels is not None:
    optimizer = optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()},
                                      freeze_labels)
  return optimizer, schedule
