"""Test-time augmentation: the views each image is also classified in, whose class probabilities
are averaged (`config.eval.tta`, the `--tta` of bloodcell-predict and bloodcell-export).

`VIEWS` maps a name to a function from images (N, H, W, C) to the list of their views, the images
themselves first; the jitted steps (bloodcell_jax.training.steps) take that function. The empty
name is no TTA (`views_of("")` is None: the images alone).

The views are rotations by `jnp.rot90` of the images and of their mirror by `jnp.flip`: both
lower to reversals and transposes, which every export format runs.
"""

from typing import Callable, List, Optional

import jax.numpy as jnp

from bloodcell_jax.registry import Registry

VIEWS = Registry("TTA view set", where="config.eval.tta")


def _rotated(images, k: int, mirrored: bool):
  """`images` (N, H, W, C) mirrored left to right (if `mirrored`), then turned k quarters."""
  return jnp.rot90(jnp.flip(images, axis=2) if mirrored else images, k, axes=(1, 2))


@VIEWS.register("flips")
def flips(images) -> List:
  """4 views: the images as they are, mirrored horizontally, both ways, vertically."""
  return [_rotated(images, k, mirrored)
          for k, mirrored in ((0, False), (0, True), (2, False), (2, True))]


@VIEWS.register("d4")
def d4(images) -> List:
  """8 views, the dihedral group: the 4 rotations of the images and of their mirror."""
  return [_rotated(images, k, mirrored) for mirrored in (False, True) for k in range(4)]


def views_of(name: str, where: Optional[str] = None) -> Optional[Callable]:
  """The view function registered as `name`; None for "" (no TTA). An unknown name is the
  registry's UserError, naming `where` the name came from (default config.eval.tta)."""
  return VIEWS.get(name, where) if name else None
