"""Cleaning throughput on a real ImageFolder (default: ../shared/data/pbc96).

  python benchmarks/clean.py [--data=PATH] [--runs=3]

Prints one JSON object per line: the read ({"bench": "clean_read", ...}) and
the cleaning itself ({"bench": "clean", "images", "seconds" (median of the
runs), "images_per_s", "stages" (seconds of each stage, median run),
"findings", "contaminated_fraction": at most 0.001 on the PBC images, "removed"}), on this
machine's cores. Contact sheets and report writing are
not timed (they depend on how much is found, not on the data size).
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from bloodcell_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from bloodcell_jax.data.cleaning import run, settings  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "pbc96"))
  parser.add_argument("--runs", type=int, default=3)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  start = time.perf_counter()
  data = sources.load_source(args.data, 96)
  read = time.perf_counter() - start
  print(json.dumps({"bench": "clean_read", "images": len(data), "seconds": round(read, 2),
                    "cores": os.cpu_count()}), flush=True)
  timings = []
  for _ in range(args.runs):
    start = time.perf_counter()
    result = run.clean(data, settings.CleaningSettings())
    timings.append((time.perf_counter() - start, result))
  timings.sort(key=lambda t: t[0])
  seconds, result = timings[len(timings) // 2]
  print(json.dumps({
      "bench": "clean", "images": len(data), "seconds": round(seconds, 2),
      "images_per_s": round(len(data) / seconds, 1), "runs": args.runs,
      "all_seconds": [round(t, 2) for t, _ in sorted(timings, key=lambda t: t[0])],
      "stages": result.seconds, "cores": os.cpu_count(),
      "findings": {k: len(result.of_kind(k)) for k in run.KINDS},
      # On the PBC images a real contaminant is rare: more than a thousandth flagged means
      # the contamination model has drifted.
      "contaminated_fraction": round(len(result.of_kind("contaminated")) / len(data), 5),
      "removed": int(len(data) - result.keep.sum()),
  }), flush=True)


if __name__ == "__main__":
  main()
