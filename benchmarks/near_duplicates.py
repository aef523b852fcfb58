"""How near-duplicate search time grows with the number of images (synthetic thumbnails).

  python benchmarks/near_duplicates.py [--sizes=10000,100000,1000000]

The search of bloodcell_jax/data/cleaning/neighbours.py (hash codes of every
image in each of the 8 orientations looked up in `near_tables` tables, then the
radius gate on full thumbnails) runs on N synthetic 64-value thumbnails
whose variance falls off across components like real cell thumbnails do, with
1% planted near copies (turned, flipped, noisy). Prints one JSON object per
size ({"bench": "near_duplicates", "n", "seconds", "build_seconds",
"query_seconds", "candidates_per_image", "planted_recall"}) and then the growth
exponent b of seconds ~ a * N^b fitted over the sizes (2 would be all pairs).
The pixel check of the candidates is left out: it costs the same per candidate
at any N, and the candidates per image stay flat as N grows (printed).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from bloodcell_jax.data.cleaning import fingerprints as fp  # pylint: disable=g-import-not-at-top,wrong-import-position
from bloodcell_jax.data.cleaning import neighbours
from bloodcell_jax.data.cleaning.settings import CleaningSettings  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="10000,100000,1000000")
  parser.add_argument("--copies", type=float, default=0.01, help="share of planted near copies")
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def synthetic_thumbnails(n: int, copies: float, seed: int):
  """(thumbnails (n, 64), planted pairs (original, copy)) with a decaying spectrum."""
  rng = np.random.default_rng(seed)
  dims = fp.THUMB * fp.THUMB
  basis, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
  scale = np.arange(1, dims + 1, dtype=np.float32) ** -0.75
  thumbs = np.empty((n, dims), np.float32)
  for start in range(0, n, 100_000):
    rows = min(100_000, n - start)
    thumbs[start:start + rows] = (rng.normal(size=(rows, dims)).astype(np.float32) * scale) @ basis
  num_copies = int(n * copies)
  originals = rng.choice(n - num_copies, num_copies, replace=False)
  targets = np.arange(n - num_copies, n)
  turns = rng.integers(0, fp.NUM_ORIENTATIONS, num_copies)
  for g in range(fp.NUM_ORIENTATIONS):
    rows = turns == g
    thumbs[targets[rows]] = fp.oriented(thumbs[originals[rows]], g)
  thumbs[targets] += rng.normal(0, 0.02, (num_copies, dims)).astype(np.float32)
  return fp.standardise(thumbs), set(zip(np.minimum(originals, targets).tolist(),
                                         np.maximum(originals, targets).tolist()))


def time_search(n: int, args, chosen) -> dict:
  thumbs, planted = synthetic_thumbnails(n, args.copies, args.seed)
  start = time.perf_counter()
  index = neighbours.ThumbnailIndex(thumbs, tables=chosen.near_tables)
  built = time.perf_counter()
  found = index.query(thumbs, chosen.near_radius, same_set=True)
  done = time.perf_counter()
  pairs = set(zip(found.a.tolist(), found.b.tolist()))
  return {"bench": "near_duplicates", "n": n, "seconds": round(done - start, 2),
          "build_seconds": round(built - start, 2), "query_seconds": round(done - built, 2),
          "candidates_per_image": round(len(found) / n, 3),
          "planted_recall": round(len(planted & pairs) / max(len(planted), 1), 4),
          "bits": index.bits, "tables": index.tables, "orientations": fp.NUM_ORIENTATIONS}


def growth_exponent(rows) -> float:
  n = np.log([r["n"] for r in rows])
  seconds = np.log([r["seconds"] for r in rows])
  return float(np.polyfit(n, seconds, 1)[0])


def main(argv=None):
  args = parse_args(argv)
  chosen = CleaningSettings()
  rows = []
  for n in (int(s) for s in args.sizes.split(",")):
    rows.append(time_search(n, args, chosen))
    print(json.dumps(rows[-1]), flush=True)
  if len(rows) >= 2:
    print(json.dumps({"bench": "near_duplicates_growth", "sizes": [r["n"] for r in rows],
                      "exponent": round(growth_exponent(rows), 3),
                      "note": "seconds ~ N^exponent; all pairs would be 2"}), flush=True)


if __name__ == "__main__":
  main()
