"""Where in an image a prediction comes from: Grad-CAM heat maps a haematologist can check.

Grad-CAM (Selvaraju et al. 2017): the last feature map of the network (the output of the last
top-level module that keeps rows and columns), weighted channel by channel by the mean
gradient of the explained class's logit, summed, rectified, enlarged to the input and scaled
to [0, 1] per image; jitted and batched, for any registered model. A model that re-cuts its
input about the nucleus first (config.model.framing) looks at the re-cut image: its map is
shown on that image (`framed`).

Integrated gradients (Sundararajan et al. 2017) were tried beside it and left out: on the
project's CNN their maps from randomised weights correlate 0.63 with the trained model's
(Grad-CAM: 0.11), the failure of Adebayo et al.'s sanity check that gradient-times-input maps
are known for: they show the image's edges more than the model.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bloodcell_jax.training import sharding


def _is_top_level_call(context, name=None) -> bool:
  path = context.module.scope.path
  return (context.method_name == "__call__" and len(path) == 1
          and (name is None or path[0] == name))


def last_feature_map(model, state, image_shape) -> str:
  """The name of the last top-level module whose output is an (N, H, W, C) map."""
  names = []

  def note_maps(next_call, args, kwargs, context):
    out = next_call(*args, **kwargs)
    if _is_top_level_call(context) and getattr(out, "ndim", 0) == 4:
      names.append(context.module.scope.path[0])
    return out

  with flax.linen.intercept_methods(note_maps):
    jax.eval_shape(lambda s, x: _logits(model, s, x), state,
                   jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  if not names:
    raise ValueError("the model has no top-level module with a feature map output")
  return names[-1]


def _logits(model, state, images):
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return model.apply(variables, images, train=False).astype(jnp.float32)


def _chosen(logits, targets):
  return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()


def grad_cam(state, images, targets, *, model, layer: str):
  """(N, H, W) Grad-CAM maps of the `targets` classes at the output of module `layer`."""

  def chosen_logits(probe):
    caught = []

    def add_probe(next_call, args, kwargs, context):
      out = next_call(*args, **kwargs)
      if _is_top_level_call(context, layer):
        caught.append(out)
        return out + probe.astype(out.dtype)  # d logits / d probe = d logits / d map
      return out

    with flax.linen.intercept_methods(add_probe):
      logits = _logits(model, state, images)
    return _chosen(logits, targets), caught[-1]

  shape = jax.eval_shape(lambda: chosen_logits(jnp.zeros(()))[1]).shape
  gradients, feature_map = jax.grad(chosen_logits, has_aux=True)(jnp.zeros(shape, jnp.float32))
  weights = gradients.mean(axis=(1, 2), keepdims=True)
  cam = jax.nn.relu((weights * feature_map.astype(jnp.float32)).sum(axis=-1))
  return _unit_scaled(jax.image.resize(cam, (len(images), *images.shape[1:3]), "bilinear"))


def _unit_scaled(maps):
  low = maps.min(axis=(1, 2), keepdims=True)
  high = maps.max(axis=(1, 2), keepdims=True)
  return (maps - low) / jnp.maximum(high - low, 1e-12)


@functools.lru_cache(maxsize=8)
def _jitted(model, layer: str, mesh):
  return jax.jit(functools.partial(grad_cam, model=model, layer=layer),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh),
                               sharding.batch_sharded(mesh)),
                 out_shardings=sharding.replicated(mesh))


def explain(model, state, images: np.ndarray, targets: np.ndarray,
            batch_size: int = 32) -> np.ndarray:
  """(N, H, W) Grad-CAM maps in [0, 1] of why the model gave each image its `targets` class,
  in padded batches over the device mesh."""
  mesh = sharding.make_mesh()
  step = _jitted(model, last_feature_map(model, state, images.shape[1:]), mesh)
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  maps = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size].astype(np.float32)
    chosen = np.asarray(targets[start:start + batch_size], np.int32)
    valid = len(chunk)
    pad = batch_size - valid
    chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.float32)])
    chosen = np.concatenate([chosen, np.zeros(pad, np.int32)])
    batch = sharding.global_batch({"image": chunk, "target": chosen}, mesh)
    maps.append(np.asarray(step(state, batch["image"], batch["target"]))[:valid])
  return np.concatenate(maps) if maps else np.zeros((0,) + images.shape[1:3], np.float32)


def framed(images: np.ndarray, method: str) -> np.ndarray:
  """The images as a model with config.model.framing=`method` sees them (uint8)."""
  if method == "none":
    return images
  from bloodcell_jax.models import framing  # pylint: disable=g-import-not-at-top
  out = jax.jit(framing.apply_framing, static_argnums=1)(images.astype(np.float32), method)
  return np.clip(np.rint(np.asarray(out)), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, seen: np.ndarray = None,
            scale: int = 3) -> np.ndarray:
  """uint8 (scale * H, scale * 2W, 3): the image beside what the model saw (`seen`, the
  framed image; the image itself by default) under its heat map (inferno)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  seen = image if seen is None else seen
  coloured = colormaps["inferno"](heat)[..., :3] * 255.0
  blended = (0.45 * seen.astype(np.float32) + 0.55 * coloured).astype(np.uint8)
  pair = np.concatenate([image, blended], axis=1)
  return pair.repeat(scale, axis=0).repeat(scale, axis=1)


def pictures(model, state, images: np.ndarray, targets: np.ndarray, framing: str,
             scale: int = 3) -> list:
  """`overlay` of every image: it beside its Grad-CAM map for its `targets` class, on the
  image as a model with config.model.framing=`framing` sees it."""
  maps = explain(model, state, images, targets)
  return [overlay(image, heat, seen, scale)
          for image, heat, seen in zip(images, maps, framed(images, framing))]


def png_name(image_id: str, class_name: str) -> str:
  """A file name for an image's explanation: its id with folders joined by '__', and the
  class explained."""
  stem = str(image_id).replace("\\", "/").replace("/", "__").rsplit(".", 1)[0]
  return f"{stem}.{class_name}.png"
