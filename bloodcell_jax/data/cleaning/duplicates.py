"""Exact and near duplicates within one image set, and copies shared with a held-out set."""

import dataclasses

import numpy as np

from bloodcell_jax.data.cleaning import alignment, neighbours
from bloodcell_jax.data.cleaning import fingerprints as fp


@dataclasses.dataclass
class Matches:
  """Confirmed near-duplicate pairs: image b, turned by g and moved by (dy, dx), copies a."""
  a: np.ndarray
  b: np.ndarray
  g: np.ndarray
  similarity: np.ndarray
  dy: np.ndarray
  dx: np.ndarray

  def __len__(self):
    return len(self.a)

  def describe(self, i: int, ids_a, ids_b) -> dict:
    return {"a": str(ids_a[self.a[i]]), "b": str(ids_b[self.b[i]]),
            "similarity": round(float(self.similarity[i]), 4),
            "transform": fp.ORIENTATION_NAMES[int(self.g[i])],
            "shift": [int(self.dy[i]), int(self.dx[i])]}


def exact_groups(digests: np.ndarray) -> list:
  """Index arrays (ascending) of the images that share a pixel digest, 2 or more each."""
  order = np.argsort(digests, kind="stable")
  sorted_digests = digests[order]
  starts = np.flatnonzero(np.r_[True, sorted_digests[1:] != sorted_digests[:-1]])
  groups = np.split(order, starts[1:])
  return sorted((np.sort(g) for g in groups if len(g) > 1), key=lambda g: g[0])


def representatives(num_images: int, groups: list) -> np.ndarray:
  """One index per exact group (its first) and every ungrouped image."""
  is_copy = np.zeros(num_images, bool)
  for group in groups:
    is_copy[group[1:]] = True
  return np.flatnonzero(~is_copy)


def near_duplicates(images: np.ndarray, searched: np.ndarray, settings, seed: int = 0):
  """(hash index over `images[searched]`, confirmed Matches in indices of `images`)."""
  subset = images[searched]
  thumbs, _ = fp.aligned_thumbnails(subset)
  index = neighbours.ThumbnailIndex(thumbs, tables=settings.near_tables, seed=seed)
  found = index.query(thumbs, settings.near_radius, same_set=True)
  matches = confirm(subset, subset, found, settings)
  return index, _reindexed(matches, searched, searched)


def leaked(index: "neighbours.ThumbnailIndex", images: np.ndarray, indexed: np.ndarray,
           held_out: np.ndarray, settings) -> Matches:
  """Near copies of held-out images among `images[indexed]` (in indices of both sets)."""
  thumbs, _ = fp.aligned_thumbnails(held_out)
  found = index.query(thumbs, settings.near_radius, same_set=False)
  matches = confirm(images[indexed], held_out, found, settings)
  return _reindexed(matches, indexed, np.arange(len(held_out)))


def confirm(images_a, images_b, found: "neighbours.Candidates", settings) -> Matches:
  """The candidates whose aligned fine detail correlates at least near_min_similarity."""
  similarity, dy, dx = alignment.similarities(images_a, images_b, found.a, found.b, found.g,
                                              settings.max_shift)
  ok = similarity >= settings.near_min_similarity
  return Matches(found.a[ok], found.b[ok], found.g[ok], similarity[ok], dy[ok], dx[ok])


def components(num_images: int, groups: list, matches: Matches) -> list:
  """Connected components (index arrays, 2 or more) of exact groups and near matches."""
  parent = np.arange(num_images)

  def root(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  def join(i, j):
    ri, rj = root(i), root(j)
    if ri != rj:
      parent[max(ri, rj)] = min(ri, rj)

  for group in groups:
    for other in group[1:]:
      join(group[0], other)
  for a, b in zip(matches.a, matches.b):
    join(int(a), int(b))
  roots = np.asarray([root(i) for i in range(num_images)])
  return exact_groups(roots)  # images that share a root, grouped like equal digests


def _reindexed(matches: Matches, map_a: np.ndarray, map_b: np.ndarray) -> Matches:
  return dataclasses.replace(matches, a=map_a[matches.a], b=map_b[matches.b])
