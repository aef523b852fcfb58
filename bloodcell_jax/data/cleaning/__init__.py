"""Dataset cleaning: duplicates, near duplicates, label conflicts, contamination, leakage.

  fingerprints.py   pixel digests; alignment-invariant thumbnails; dihedral transforms
  neighbours.py     near-duplicate candidates by locality-sensitive hashing (not all pairs)
  alignment.py      the pixel check that confirms a candidate (flip/turn and shift undone)
  duplicates.py     exact groups, confirmed near pairs, groups, held-out copies
  contamination.py  the data-fitted model of a cell image and its per-tile scores
  run.py            one pass: findings and the keep decision
  report.py         report.json, keep.txt, console summary
  keep.py           reads a keep.txt (training, the cache, the TFDS builder)
  contact_sheets.py PNGs of every finding for a person to check
  cache.py          cleaning as a cached step of training (config.data.clean)
  settings.py       thresholds (config.data.cleaning)

Command line: python -m bloodcell_jax.data.clean --data=PATH [--test=PATH] --out=DIR
"""
