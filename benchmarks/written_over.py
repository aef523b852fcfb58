"""How many cell images with words written over them cleaning finds, among real ones.

  python benchmarks/written_over.py [--data=PATH] [--count=300]

Writes injection.text_over annotations over `--count` images of the data (half of
them re-encoded as JPEG, quality 75-95), adds them to the data and cleans it all
with the default settings. Prints one JSON object: the recall of the written-over
images (all criteria, and the writing criterion alone), how many of the data's own
images are flagged, the writing z-scores of both at a few quantiles and the seconds
the contamination model took, and the writing criterion's recall and flagged own
images at other thresholds.
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

from bloodcell_jax.data import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from bloodcell_jax.data.cleaning import contamination, settings  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import injection  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "pbc96"))
  parser.add_argument("--count", type=int, default=300)
  parser.add_argument("--seed", type=int, default=11)
  args = parser.parse_args(argv)
  images = sources.load_source(args.data, 96).images
  rng = np.random.default_rng(args.seed)
  written = []
  for k in range(args.count):
    image = injection.text_over(images[rng.integers(len(images))], rng)
    written.append(injection.jpeg(image, int(rng.integers(75, 96))) if k % 2 else image)
  everything = np.concatenate([images, np.stack(written)])
  chosen = settings.CleaningSettings()
  start = time.perf_counter()
  observed = contamination.observe(everything)
  model = contamination.fit(observed, chosen, everything)
  scores = contamination.score(observed, model, chosen)
  seconds = time.perf_counter() - start
  n = len(images)
  writing = scores.ratios[:, contamination.CRITERIA.index("written_over")] >= 1.0
  z = scores.values[:, contamination.CRITERIA.index("written_over")]
  print(json.dumps({
      "bench": "written_over", "images": n, "written_over": args.count,
      "recall": round(float(scores.flagged[n:].mean()), 4),
      "recall_writing_criterion": round(float(writing[n:].mean()), 4),
      "own_images_flagged": int(scores.flagged[:n].sum()),
      "own_images_flagged_by_writing": int(writing[:n].sum()),
      "own_z_top": [round(float(v), 2) for v in np.sort(z[:n])[::-1][:10]],
      "written_z_quantiles": {q: round(float(np.quantile(z[n:], q)), 2)
                              for q in (0.05, 0.1, 0.25, 0.5)},
      "at_other_thresholds": {f"z>={t}": {"recall": round(float((z[n:] >= t).mean()), 4),
                                          "own_images": int((z[:n] >= t).sum())}
                              for t in (4.0, 4.5, 5.0, 5.5, 6.0)},
      "contamination_seconds": round(seconds, 1), "cores": os.cpu_count()}), flush=True)


if __name__ == "__main__":
  main()
