"""Near-duplicate candidates without comparing every pair: locality-sensitive hashing.

Each (centred) thumbnail gets, per hash table, a code of `bits` signs of random
projections: thumbnails a small angle apart (near copies) share a code with
high probability, unrelated ones rarely. `bits` is chosen from the data so
that an image shares its code with about `_TARGET_COLLISIONS` others on
average, whatever N is; `tables` independent tables give copies many chances.
An image is looked up in every table once per orientation (the 8 flips and
90-degree turns of its thumbnail), so the work is sorting and searching
8 x tables x N codes, about N log N, and the candidates per image stay bounded
as N grows: near-duplicate search is not quadratic
(benchmarks/near_duplicates.py measures it up to 1,000,000 thumbnails).
Candidates then pass a radius gate on the full thumbnails and the pixel check.
"""

import dataclasses

import numpy as np

from bloodcell_jax.data.cleaning import fingerprints as fp

MAX_BITS = 60  # sign bits drawn per table; a prefix of `bits` of them is used
_TARGET_COLLISIONS = 1.0  # mean number of other images sharing an image's code
_MAX_BUCKET = 64  # images taken from one code (a pile of identical frames stays bounded)
_CHUNK = 8192  # thumbnails hashed at a time
_PAIR_CHUNK = 1 << 20  # candidate pairs measured at a time


@dataclasses.dataclass
class Candidates:
  """Pairs (a, b) where dihedral transform g of image b may copy image a."""
  a: np.ndarray
  b: np.ndarray
  g: np.ndarray
  distance: np.ndarray

  def __len__(self):
    return len(self.a)

  def subset(self, mask) -> "Candidates":
    return Candidates(self.a[mask], self.b[mask], self.g[mask], self.distance[mask])


class ThumbnailIndex:
  """Hash tables over the thumbnails of one image set."""

  def __init__(self, thumbs: np.ndarray, tables: int = 20, seed: int = 0):
    self.thumbs = thumbs
    rng = np.random.default_rng(seed)
    sample = thumbs[rng.permutation(len(thumbs))[:20000]]
    # The mean over all orientations is unchanged by any of them, so centring
    # commutes with turning a thumbnail.
    self.centre = np.mean([fp.oriented(sample, g).mean(axis=0)
                           for g in range(fp.NUM_ORIENTATIONS)], axis=0)
    self.planes = rng.standard_normal((thumbs.shape[1], tables * MAX_BITS)).astype(np.float32)
    self.tables = tables
    full = self._codes(thumbs, MAX_BITS)
    self.bits = choose_bits(full[:, 0], len(thumbs))
    codes = full >> np.uint64(MAX_BITS - self.bits)
    self.order = np.argsort(codes, axis=0, kind="stable")
    # Per table: the distinct codes, where each starts in `order`, how many share it.
    self.buckets = []
    for t in range(tables):
      distinct, starts, counts = np.unique(codes[self.order[:, t], t], return_index=True,
                                           return_counts=True)
      self.buckets.append((distinct, starts, counts))

  def _codes(self, thumbs: np.ndarray, bits: int) -> np.ndarray:
    """(N, tables) uint64: the first `bits` projection signs of each table, first highest."""
    planes = self.planes.reshape(-1, self.tables, MAX_BITS)[:, :, :bits].reshape(-1,
                                                                               self.tables * bits)
    weights = (np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64))
    codes = np.empty((len(thumbs), self.tables), np.uint64)
    for start in range(0, len(thumbs), _CHUNK):
      signs = ((thumbs[start:start + _CHUNK] - self.centre) @ planes) > 0
      signs = signs.reshape(len(signs), self.tables, bits)
      codes[start:start + _CHUNK] = (signs.astype(np.uint64) * weights).sum(axis=2)
    return codes

  def query(self, thumbs: np.ndarray, radius: float, same_set: bool) -> Candidates:
    """Candidates between the indexed images (a) and `thumbs` (b), every orientation,
    whose full thumbnails lie within `radius` (b turned by g)."""
    found = []
    for g in range(fp.NUM_ORIENTATIONS):
      codes = self._codes(fp.oriented(thumbs, g), self.bits)
      a, b = self._colliding(codes)
      if same_set:  # symmetric cells match themselves turned: never a pair
        a, b = a[a != b], b[a != b]
      pairs = Candidates(a, b, np.full(len(a), g), np.zeros(len(a)))
      pairs.distance = thumbnail_distances(self.thumbs, thumbs, pairs)
      found.append(pairs.subset(pairs.distance <= radius))
    a, b, g, distance = (np.concatenate([getattr(f, k) for f in found])
                         for k in ("a", "b", "g", "distance"))
    if same_set:
      a, b, g = _ordered(a, b, g)
    a, b, g, distance = _closest_per_pair(a, b, g, distance)
    return Candidates(a.astype(np.int64), b.astype(np.int64), g.astype(np.int64), distance)

  def _colliding(self, codes: np.ndarray):
    """Distinct (indexed image, query image) pairs that share a code in some table."""
    keys = []
    for t, (distinct, starts, counts) in enumerate(self.buckets):
      # Looking up sorted codes walks the table in order: far fewer cache misses.
      by_code = np.argsort(codes[:, t])
      needles = codes[by_code, t]
      slot = np.minimum(np.searchsorted(distinct, needles), len(distinct) - 1)
      hit = distinct[slot] == needles
      sizes = np.where(hit, np.minimum(counts[slot], _MAX_BUCKET), 0)
      first = starts[slot]
      queries = np.repeat(by_code, sizes)
      offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
      indexed = self.order[np.repeat(first, sizes) + offsets, t]
      keys.append(indexed.astype(np.int64) * len(codes) + queries)
    keys = np.unique(np.concatenate(keys))
    return keys // len(codes), keys % len(codes)


def choose_bits(codes: np.ndarray, n: int) -> int:
  """The fewest bits (>= 8) at which an image shares its code with _TARGET_COLLISIONS others."""
  for bits in range(8, MAX_BITS + 1, 2):
    _, counts = np.unique(codes >> np.uint64(MAX_BITS - bits), return_counts=True)
    if (counts * (counts - 1.0)).sum() / max(n, 1) <= _TARGET_COLLISIONS:
      return bits
  return MAX_BITS


def thumbnail_distances(thumbs_a, thumbs_b, pairs: Candidates) -> np.ndarray:
  """Euclidean distance of each pair's full thumbnails, b turned by the pair's g."""
  distance = np.empty(len(pairs))
  for start in range(0, len(pairs), _PAIR_CHUNK):  # bounded temporaries at any N
    part = slice(start, start + _PAIR_CHUNK)
    a, b, g = pairs.a[part], pairs.b[part], pairs.g[part]
    out = np.empty(len(a))
    for turn in np.unique(g):
      rows = g == turn
      turned = fp.oriented(thumbs_b[b[rows]], int(turn))
      out[rows] = np.linalg.norm(thumbs_a[a[rows]] - turned, axis=1)
    distance[part] = out
  return distance


def _ordered(a, b, g):
  """(a, b, g) with a < b; g turns b onto a, so a swapped pair takes g's inverse."""
  swap = a > b
  inverse = np.asarray(fp.INVERSE)
  return np.where(swap, b, a), np.where(swap, a, b), np.where(swap, inverse[g], g)


def _closest_per_pair(a, b, g, distance):
  if not len(a):
    return a, b, g, distance
  order = np.lexsort((distance, b, a))
  a, b, g, distance = a[order], b[order], g[order], distance[order]
  first = np.ones(len(a), bool)
  first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
  return a[first], b[first], g[first], distance[first]
