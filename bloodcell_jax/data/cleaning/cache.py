"""Cleaning as a step of training (`config.data.clean=True`), cached by content.

A run is keyed by a fingerprint of what it depends on: the decoded pixels,
labels and ids of the training data (and of the held-out sets checked for
leakage), the settings and CLEANING_VERSION. Its outputs (report.json,
keep.txt, contact sheets) go to `<cache_dir>/<source name>-<fingerprint>/`,
written to a temporary directory first and renamed, so that a crashed run never
leaves a half cache and concurrent runs cannot mix. Any change of images,
labels or settings gives a new key, so a stale result is never reused.
cache_dir defaults to $BLOODCELL_JAX_CACHE, else $XDG_CACHE_HOME/bloodcell_jax,
else ~/.cache/bloodcell_jax, plus /cleaning.

`keep_file` instead applies a keep.txt made (and perhaps reviewed and edited) by
the CLI; its ids must all exist in the data.
"""

import hashlib
import json
import os
import tempfile

import numpy as np

from bloodcell_jax.data.cleaning import contact_sheets, keep, report, run
from bloodcell_jax.data.cleaning import settings as settings_lib
from bloodcell_jax.errors import UserError

CLEANING_VERSION = 2  # bump when a change of the code changes what a run finds


def default_cache_dir() -> str:
  base = (os.environ.get("BLOODCELL_JAX_CACHE")
          or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                          "bloodcell_jax"))
  return os.path.join(base, "cleaning")


def fingerprint(data, held_out: dict, chosen) -> str:
  digest = hashlib.blake2b(digest_size=12)
  digest.update(json.dumps({"version": CLEANING_VERSION, "settings": chosen.as_dict(),
                            "held_out": sorted(held_out)}, sort_keys=True).encode())
  for image_set in [data] + [held_out[k] for k in sorted(held_out)]:
    digest.update(repr((image_set.images.shape, image_set.class_names)).encode())
    digest.update(np.ascontiguousarray(image_set.images).data)
    digest.update(np.ascontiguousarray(image_set.labels, np.int64).data)
    digest.update("\n".join(map(str, image_set.ids)).encode())
  return digest.hexdigest()


def clean_for_training(data, held_out: dict, cleaning_config):
  """(the kept part of `data`, a summary for results.json) under config.data.cleaning."""
  cleaning_config = dict(cleaning_config or {})
  keep_file = cleaning_config.get("keep_file", "")
  if keep_file:
    return _apply_keep_file(data, keep_file)
  chosen = settings_lib.from_mapping(cleaning_config)
  cache_dir = cleaning_config.get("cache_dir") or default_cache_dir()
  key = fingerprint(data, held_out, chosen)
  out_dir = os.path.join(cache_dir, f"{_safe(data.name)}-{key}")
  reused = os.path.isfile(os.path.join(out_dir, report.KEEP))
  if not reused:
    _run_into(out_dir, data, held_out, chosen)
  with open(os.path.join(out_dir, report.REPORT)) as f:
    written = json.load(f)
  kept = keep.kept_mask(data, os.path.join(out_dir, report.KEEP))
  return data.subset(np.flatnonzero(kept)), summary(written, out_dir, key, reused)


def summary(written: dict, out_dir: str, key: str, reused: bool) -> dict:
  """The part of a report that results.json records."""
  counts = written["summary"]
  return {
      "report_dir": out_dir,
      "fingerprint": key,
      "reused_cache": reused,
      "keep_file": "",
      "num_input": written["num_images"],
      "num_kept": written["num_kept"],
      "num_removed": written["num_images"] - written["num_kept"],
      "removed": counts["removed"],
      "removed_ids": written["removed"],
      "findings": {kind: counts[kind] for kind in run.KINDS},
      "contaminated_fraction": counts["contaminated_fraction"],
  }


def _run_into(out_dir, data, held_out, chosen):
  parent = os.path.dirname(out_dir)
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise UserError(f"config.data.cleaning.cache_dir={parent}: cannot create it ({e})") from None
  staging = tempfile.mkdtemp(prefix=".partial-", dir=parent)
  result = run.clean(data, chosen, held_out)
  report.write(result, staging, source=data.name)
  if chosen.contact_sheets:
    contact_sheets.write_all(result, staging)
  try:
    os.rename(staging, out_dir)
  except OSError:  # another run finished the same key first: theirs is as good
    if not os.path.isfile(os.path.join(out_dir, report.KEEP)):
      raise


def _apply_keep_file(data, keep_file):
  kept = keep.kept_mask(data, keep_file, "config.data.cleaning.keep_file")
  removed = [str(i) for i in data.ids[~kept]]
  return data.subset(np.flatnonzero(kept)), {
      "report_dir": os.path.dirname(os.path.abspath(keep_file)), "fingerprint": "",
      "reused_cache": False, "keep_file": keep_file, "num_input": len(data),
      "num_kept": int(kept.sum()), "num_removed": len(removed),
      "removed": {"not_in_keep_file": len(removed)},
      "removed_ids": {"not_in_keep_file": removed}, "findings": {},
      "contaminated_fraction": None}


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "data"
