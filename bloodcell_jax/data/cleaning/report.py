"""What a cleaning run leaves on disk: report.json, keep.txt and a console summary.

report.json holds one entry per finding: `kind` (exact_duplicate, near_duplicate,
label_conflict, contaminated, leakage), `ids` (relative paths, or row indices
of an .npz), `score` and `details` (the evidence). keep.txt lists the ids kept,
one per line, in the source's order.
"""

import json
import os

import numpy as np

from bloodcell_jax import atomic
from bloodcell_jax.data.cleaning import run as run_lib

REPORT, KEEP = "report.json", "keep.txt"
FORMAT_VERSION = 1


def finding_entry(data, finding) -> dict:
  entry = {"kind": finding.kind, "ids": [str(data.ids[i]) for i in finding.members],
           "score": round(float(finding.score), 4), "details": _plain(finding.details)}
  return entry


def report_dict(result: "run_lib.CleaningResult", source: str = "") -> dict:
  data = result.data
  return {
      "format_version": FORMAT_VERSION,
      "source": source or data.name,
      "num_images": len(data),
      "num_kept": int(result.keep.sum()),
      "class_names": list(data.class_names),
      "held_out": {name: {"name": s.name, "num_images": len(s)}
                   for name, s in result.held_out.items()},
      "summary": summary_counts(result),
      "removed": {reason: [str(data.ids[i]) for i in indices]
                  for reason, indices in result.removed.items()},
      "settings": result.settings.as_dict(),
      "cell_model": result.model.describe(),
      "seconds": result.seconds,
      "findings": [finding_entry(data, f) for f in result.findings],
  }


def summary_counts(result) -> dict:
  counts = {kind: len(result.of_kind(kind)) for kind in run_lib.KINDS}
  counts["images_in_duplicate_groups"] = int(sum(
      len(f.members) for f in result.of_kind("exact_duplicate")))
  counts["removed"] = {reason: int(len(v)) for reason, v in result.removed.items()}
  counts["contaminated_fraction"] = round(
      float(result.contamination_scores.flagged.mean()) if len(result.data) else 0.0, 6)
  return counts


def write(result, out_dir: str, source: str = "") -> dict:
  """Writes report.json and keep.txt into out_dir; returns the report."""
  os.makedirs(out_dir, exist_ok=True)
  report = report_dict(result, source)
  atomic.write_text(os.path.join(out_dir, REPORT), json.dumps(report, indent=1) + "\n")
  kept = [str(i) for i in result.data.ids[result.keep]]
  atomic.write_text(os.path.join(out_dir, KEEP), "".join(f"{i}\n" for i in kept))
  return report


def console_summary(report: dict, out_dir: str = "") -> str:
  s = report["summary"]
  removed = s["removed"]
  lines = [
      f"{report['source']}: {report['num_images']} images, {report['num_kept']} kept "
      f"({report['num_images'] - report['num_kept']} removed)",
      f"  exact duplicates: {s['exact_duplicate']} groups ({s['images_in_duplicate_groups']} "
      "images)",
      f"  near duplicates:  {s['near_duplicate']} groups",
      f"  label conflicts:  {s['label_conflict']} groups",
      f"  contaminated:     {s['contaminated']} images ({100 * s['contaminated_fraction']:.2f}%)",
  ]
  if report["held_out"]:
    names = ", ".join(report["held_out"])
    lines.append(f"  leakage ({names}): {s['leakage']} held-out images with copies in the data")
  lines.append("  removed: " + ", ".join(f"{k} {v}" for k, v in removed.items()))
  conflicts = [f for f in report["findings"] if f["kind"] == "label_conflict"]
  for f in conflicts[:10]:
    labels = f["details"]["labels"].items()
    lines.append("  conflict: " + ", ".join(f"{i} ({c})" for i, c in labels))
  seconds = report["seconds"]
  lines.append(f"  took {sum(seconds.values()):.1f} s (" +
               ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()) + ")")
  if out_dir:
    lines.append(f"  wrote {os.path.join(out_dir, REPORT)}, {os.path.join(out_dir, KEEP)} "
                 "and contact sheets")
  return "\n".join(lines)


def _plain(value):
  """JSON-ready copies of numpy scalars and arrays inside dicts and lists."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return _plain(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  return value
