"""Train state and the pure, jitted train and eval steps. Imports no TensorFlow.

Everything a step needs comes in through its arguments or a `functools.partial`
made from the config, so the same functions serve the training loop, the
benchmarks and a bare accelerator machine fed from memory.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bloodcell_jax.training import losses, sharding
from bloodcell_jax.training.metrics import EvalMetrics, TrainMetrics


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training, and nothing else (all arrays)."""
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray
  # Exponential moving average of {"params", "batch_stats"}; {} when config.train.ema_decay=0.
  ema: Any = flax.struct.field(default_factory=dict)

  def with_ema_weights(self) -> "TrainState":
    """This state with the averaged weights in place of the raw ones (for evaluation)."""
    return self.replace(params=self.ema["params"], batch_stats=self.ema["batch_stats"])


@dataclasses.dataclass(frozen=True)
class LossConfig:
  num_classes: int
  class_weights: Optional[np.ndarray] = None
  label_smoothing: float = 0.0
  l1: float = 0.0
  l2: float = 0.0
  regularize: tuple = ((r".*kernel", 1.0), (".*", 0.0))  # param_rules: penalty multipliers
  jsd_weight: float = 0.0  # AugMix's Jensen-Shannon consistency (the paper: 12)


def init_variables(model, rng, image_size: int):
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  variables = model.init({"params": rng}, dummy, train=False)
  return variables["params"], variables.get("batch_stats", {})


def _key_shape():
  """A PRNG key's shape and dtype; making a key would compile and run XLA programs."""
  return jax.eval_shape(jax.random.PRNGKey, 0)


@functools.lru_cache(maxsize=8)
def variable_shapes(model, image_size: int):
  """(params, batch_stats) as shapes (no computation; a trace of the model, kept)."""
  return jax.eval_shape(functools.partial(init_variables, model, image_size=image_size),
                        _key_shape())


def param_shapes(model, image_size: int):
  """The parameter tree as shapes (no computation)."""
  return variable_shapes(model, image_size)[0]


def create_train_state(model, tx_factory, rng, image_size: int, mesh, *,
                       ema: bool = False) -> tuple:
  """Initialises replicated state on the mesh; returns (state, optimizer).

  `tx_factory(params)` builds the optimizer, which may need the parameter tree
  (freezing masks). Initialisation is jitted with replicated outputs so that
  every process holds the same values. `ema` keeps an average of the weights,
  starting from the initial ones.
  """
  init_rng, train_rng = jax.random.split(rng)
  tx = tx_factory(param_shapes(model, image_size))

  def init(rng):
    params, batch_stats = init_variables(model, rng, image_size)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), rng=train_rng,
                      ema=_ema_start(params, batch_stats) if ema else {})
  state = jax.jit(init, out_shardings=sharding.replicated(mesh))(init_rng)
  return state, tx


def inference_state(model, variables: dict, image_size: int, mesh) -> TrainState:
  """A state holding restored `variables` ({"params", "batch_stats"}) for evaluation, replicated
  on the mesh: no optimizer, and no initialisation to compile (a second or more of a short
  prediction's time). A tree that is not `model`'s raises ValueError naming the first
  difference."""
  leaf_shapes = lambda tree: {jax.tree_util.keystr(path): np.shape(leaf)
                              for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  expected = dict(zip(("params", "batch_stats"), variable_shapes(model, image_size)))
  for collection, shapes in expected.items():
    want, got = leaf_shapes(shapes), leaf_shapes(variables.get(collection) or {})
    for path in sorted(want.keys() | got.keys()):
      if want.get(path) != got.get(path):
        raise ValueError(f"{collection}{path}: {got.get(path, 'missing')} in the checkpoint, "
                         f"{want.get(path, 'absent')} in the model")
  return jax.device_put(_inference_state(variables["params"], variables.get("batch_stats") or {},
                                         np.zeros), sharding.replicated(mesh))


def inference_state_shapes(model, image_size: int, mesh) -> TrainState:
  """The shapes and shardings of the state `inference_state` makes for `model`, to compile
  for before the checkpoint is read."""
  replicated = sharding.replicated(mesh)
  params, batch_stats = variable_shapes(model, image_size)
  state = _inference_state(params, batch_stats, jax.ShapeDtypeStruct)
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                      state)


def _inference_state(params, batch_stats, array) -> TrainState:
  """A state of `params` and `batch_stats` with `array(shape, dtype)` for the step and the
  key, which evaluation does not use (numpy zeros: making a key would compile programs)."""
  key = _key_shape()
  return TrainState(step=array((), np.int32), params=params, batch_stats=batch_stats,
                    opt_state=(), rng=array(key.shape, key.dtype))


def _ema_start(params, batch_stats) -> dict:
  return {"params": params, "batch_stats": batch_stats}


def reset_ema(state: TrainState) -> TrainState:
  """Restarts the average from the current weights (after loading pretrained ones)."""
  return state.replace(ema=_ema_start(state.params, state.batch_stats)) if state.ema else state


def _update_ema(ema: dict, params, batch_stats, step, decay: float) -> dict:
  """ema <- d * ema + (1 - d) * weights, with d = min(decay, (1 + t) / (10 + t)): the
  warm-up of tf.train.ExponentialMovingAverage's num_updates, so that early averages
  are not dominated by the random initialisation."""
  t = step.astype(float)  # float64 in 64-bit runs
  d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jax.tree.map(lambda e, w: d * e + (1.0 - d) * w, ema, _ema_start(params, batch_stats))


def _apply(model, state, params, images, train: bool, rng=None):
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  if not train:
    return model.apply(variables, images, train=False), state.batch_stats
  logits, updates = model.apply(variables, images, train=True, rngs={"dropout": rng},
                                mutable=["batch_stats"] if state.batch_stats else [])
  return logits, updates.get("batch_stats", state.batch_stats)


def _with_views(batch: dict):
  """The clean images and their AugMix views (N, V, ...) as one batch of N * (V + 1), each
  image next to its views so that every device keeps its own examples."""
  images = batch["image"]
  if "views" not in batch:
    return images, 1
  stacked = jnp.concatenate([images[:, None], batch["views"]], axis=1)
  return stacked.reshape((-1,) + images.shape[1:]), stacked.shape[1]


def microbatches(batch: dict, count: int) -> dict:
  """A global batch as `count` micro-batches (count, N / count, ...).

  Micro-batch a holds examples a, a + count, a + 2 * count, ...: an equal share of
  every device's contiguous block of the batch, so splitting moves no data between
  devices (the batch size must be a multiple of count * devices).
  """
  return jax.tree.map(lambda x: jnp.swapaxes(x.reshape((-1, count) + x.shape[1:]), 0, 1),
                      batch)


def _unmicrobatch(x):
  """Inverse of `microbatches` for one array (count, N / count, ...) -> (N, ...)."""
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def _gradients(model, state: TrainState, batch: dict, rng, loss_config: LossConfig):
  """Gradient of the loss on one (micro-)batch: (grads, (data loss, logits, batch_stats)).

  A batch with "views" also trains on them (BatchNorm sees all of them) and adds the
  Jensen-Shannon consistency between each image and its views; the cross-entropy and
  the logits are of the clean images.
  """
  images, num_views = _with_views(batch)

  def loss_fn(params):
    logits, batch_stats = _apply(model, state, params, images, True, rng)
    if num_views > 1:
      logits = logits.reshape((-1, num_views, logits.shape[-1]))
      consistency = losses.jensen_shannon(logits, batch.get("mask"))
      logits = logits[:, 0]
    loss = losses.weighted_cross_entropy(
        logits, batch["label"], num_classes=loss_config.num_classes,
        class_weights=(None if loss_config.class_weights is None
                       else jnp.asarray(loss_config.class_weights)),
        label_smoothing=loss_config.label_smoothing, mask=batch.get("mask"))
    if num_views > 1:
      loss = loss + loss_config.jsd_weight * consistency
    penalty = losses.weight_penalty(params, l1=loss_config.l1, l2=loss_config.l2,
                                    rules=loss_config.regularize)
    return loss + penalty, (loss, logits, batch_stats)

  return jax.grad(loss_fn, has_aux=True)(state.params)


def _accumulated_gradients(model, state: TrainState, batch: dict, rng, loss_config: LossConfig,
                           count: int):
  """`_gradients` of the whole batch computed over `count` micro-batches in sequence.

  The mean of the micro-batch gradients is the gradient of the whole batch's loss
  (every micro-batch has the same number of examples, and the weight penalty is in
  each). BatchNorm differs, as with any accumulation: the forward pass normalises
  by micro-batch statistics. Each micro-batch starts from the same running
  statistics and their updates are averaged, so the first layer's running mean is
  the whole batch's.
  """
  def accumulate(total, micro_and_index):
    micro, index = micro_and_index
    grads, (loss, logits, batch_stats) = _gradients(
        model, state, micro, jax.random.fold_in(rng, index), loss_config)
    total = jax.tree.map(jnp.add, total, (grads, batch_stats))
    return total, (loss, logits)

  zeros = jax.tree.map(jnp.zeros_like, (state.params, state.batch_stats))
  # A loop keeps one micro-batch's activations alive at a time. XLA:CPU runs a loop body
  # ~20x slower than the same ops unrolled (benchmarks/train_step.py --grad_accum_steps),
  # so on CPUs the micro-batches are unrolled instead.
  (grads, batch_stats), (loss, logits) = jax.lax.scan(
      accumulate, zeros, (microbatches(batch, count), jnp.arange(count)),
      unroll=jax.default_backend() == "cpu")
  grads, batch_stats = jax.tree.map(lambda t: t / count, (grads, batch_stats))
  return grads, (loss.mean(), _unmicrobatch(logits), batch_stats)


def train_step(state: TrainState, batch: dict, *, model, tx, loss_config: LossConfig,
               learning_rate_fn, grad_accum_steps: int = 1, ema_decay: float = 0.0):
  """One optimisation step on a global batch; returns (new state, metrics).

  `grad_accum_steps` > 1 computes the gradient over that many micro-batches in
  sequence (same update as the whole batch, a fraction of the activation memory).
  The loss and accuracy reported are of the clean images, without the penalty.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  if grad_accum_steps > 1:
    grads, (loss, logits, batch_stats) = _accumulated_gradients(
        model, state, batch, rng, loss_config, grad_accum_steps)
  else:
    grads, (loss, logits, batch_stats) = _gradients(model, state, batch, rng, loss_config)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = jax.tree.map(lambda p, u: p + u, state.params, updates)
  ema = (_update_ema(state.ema, params, batch_stats, state.step, ema_decay)
         if state.ema else state.ema)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema=ema)
  labels = batch["label"] if batch["label"].ndim == 1 else jnp.argmax(batch["label"], -1)
  metrics = TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=labels, learning_rate=learning_rate_fn(state.step))
  return new_state, metrics


def view_logits(model, state: TrainState, images, views: Optional[Callable] = None):
  """Logits of every view of every image (V, N, classes), BatchNorm in inference mode.

  `views(images)` lists the views of a batch (bloodcell_jax.evaluation.tta), all classified
  as one batch; None: the images alone (V = 1).
  """
  listed = [images] if views is None else views(images)
  stacked = jnp.concatenate(listed) if len(listed) > 1 else listed[0]
  logits, _ = _apply(model, state, state.params, stacked, False)
  return logits.reshape((len(listed), images.shape[0], -1)).astype(jnp.float32)


def log_probabilities(model, state: TrainState, images, views: Optional[Callable] = None,
                      temperature=1.0):
  """Log of the class probabilities averaged over the `views` of each image (each view's
  logits divided by `temperature` first): (N, classes)."""
  logits = view_logits(model, state, images, views) / temperature
  return jax.nn.logsumexp(jax.nn.log_softmax(logits), axis=0) - jnp.log(logits.shape[0])


def logits_and_features(state: TrainState, images, *, model, layer: str):
  """Logits (N, classes) and penultimate features (N, D) of a batch in inference mode: the
  features are the input of the top-level module `layer` (the classifier), flattened, caught
  on their way in so that no model has to return them."""
  captured = []

  def catch_input(next_call, args, kwargs, context):
    if context.method_name == "__call__" and context.module.scope.path == (layer,):
      captured.append(args[0])
    return next_call(*args, **kwargs)

  with flax.linen.intercept_methods(catch_input):
    logits, _ = _apply(model, state, state.params, images, False)
  if not captured:
    raise ValueError(f"the model has no top-level module {layer!r}")
  features = captured[-1].reshape(images.shape[0], -1)
  return logits.astype(jnp.float32), features.astype(jnp.float32)


def eval_step(state: TrainState, batch: dict, *, model, views: Optional[Callable] = None):
  """Metrics of one padded evaluation batch (padding masked out); with `views`, of the
  probabilities averaged over them."""
  log_probs = log_probabilities(model, state, batch["image"], views)
  labels, mask = batch["label"], batch["mask"]
  per_example = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return EvalMetrics.single_from_model_output(loss=per_example, logits=log_probs,
                                              labels=labels, mask=mask)


def outputs_step(state: TrainState, batch: dict, *, model, views: Optional[Callable] = None):
  """(log probabilities, labels, mask) of one padded evaluation batch, for what needs every
  example's output (prediction files, calibration, ensembles)."""
  return log_probabilities(model, state, batch["image"], views), batch["label"], batch["mask"]


def predict_step(state: TrainState, images, temperature, *, model,
                 views: Optional[Callable] = None):
  """Class probabilities of a batch of images (inference mode), averaged over their `views`,
  with each view's logits divided by `temperature` (1: uncalibrated)."""
  return jnp.exp(log_probabilities(model, state, images, views, temperature))


def jit_logits_and_features(mesh, **kwargs):
  return jax.jit(functools.partial(logits_and_features, **kwargs),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def jit_train_step(mesh, **kwargs):
  """The train step jitted for the mesh: batch split on 'data', state replicated and donated."""
  return jax.jit(functools.partial(train_step, **kwargs),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=(sharding.replicated(mesh), sharding.replicated(mesh)),
                 donate_argnums=0)


def jit_eval_step(mesh, **kwargs):
  return jax.jit(functools.partial(eval_step, **kwargs),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def jit_outputs_step(mesh, **kwargs):
  return jax.jit(functools.partial(outputs_step, **kwargs),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def jit_predict_step(mesh, **kwargs):
  return jax.jit(functools.partial(predict_step, **kwargs),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh),
                               sharding.replicated(mesh)),
                 out_shardings=sharding.replicated(mesh))
