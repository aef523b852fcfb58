"""The results table of a directory of runs (a sweep's, or any): one row per run group.

  python -m bloodcell_jax.table DIR [--out=DIR/table]

A group is the runs that differ only in `seed` (a sweep records each run's group in its
results.json; other runs are a group of one). Each cell is the mean +- standard
deviation over the group's seeds; the best value of each metric column is bold, as in
the study's Table 1. A group of two or more seeds gains an ensemble row: the accuracy
of its runs' averaged probabilities (from their predictions/*.csv), when they were
evaluated on the same images. Writes DIR/table.md and DIR/table.csv and prints the
Markdown.
"""

import csv
import dataclasses
import io
import os
from typing import List, Optional

import numpy as np

from bloodcell_jax import atomic
from bloodcell_jax.errors import UserError
from bloodcell_jax.results import predictions
from bloodcell_jax.training import run_files


@dataclasses.dataclass(frozen=True)
class Column:
  key: str  # in results.json, or a derived value (see `_value`)
  title: str
  kind: str  # "accuracy" (bold: max), "error" (bold: min), "count", "seconds"


_METRICS = ("val_accuracy", "augmented_val_accuracy", "test_accuracy", "val_balanced_accuracy")
_title = lambda key: (key.replace("_", " ") + " ").replace("val ", "val. ").strip()
COLUMNS = (
    [Column(k, _title(k), "accuracy") for k in _METRICS]
    + [Column(f"ema_{k}", f"EMA {_title(k)}", "accuracy") for k in _METRICS[:3]]
    + [Column(f"{k}_tta", f"{_title(k)} TTA", "accuracy") for k in _METRICS[:3]]
    + [Column("val_ece", "val. ECE", "error"),
       Column("val_ece_calibrated", "val. ECE calibrated", "error"),
       Column("trainable_parameters", "trainable params", "count"),
       Column("train_seconds", "training time", "seconds")])
# Columns an ensemble row fills from its members' averaged probabilities.
ENSEMBLE_PREDICTIONS = {"val_accuracy": "val", "augmented_val_accuracy": "augmented_val",
                        "test_accuracy": "test", "val_accuracy_tta": "val_tta",
                        "augmented_val_accuracy_tta": "augmented_val_tta",
                        "test_accuracy_tta": "test_tta"}


@dataclasses.dataclass
class Run:
  name: str
  workdir: str
  group: str  # its label in the table
  results: Optional[dict]  # None: not finished
  error: str = ""  # the one-line error of a failed run


@dataclasses.dataclass
class Row:
  label: str
  runs: List[str]
  values: dict  # column key -> values over the runs (one for an ensemble)
  ensemble: bool = False


def read_runs(directory: str) -> List[Run]:
  """Every run under `directory`: its sub-directories with a results.json or a recorded
  failure, in name order (a sweep's own order when it wrote sweep.json)."""
  if not os.path.isdir(directory):
    raise UserError(f"{directory}: no such directory")
  record = atomic.read_json(os.path.join(directory, run_files.SWEEP_RECORD), {})
  names = [r["name"] for r in record.get("runs", [])] or sorted(os.listdir(directory))
  runs = []
  for name in names:
    workdir = os.path.join(directory, name)
    results = atomic.read_json(os.path.join(workdir, run_files.RESULTS))
    failure = atomic.read_json(os.path.join(workdir, run_files.FAILURE), {})
    if results is None and not failure:
      if record:  # a sweep's pending run
        runs.append(Run(name, workdir, name, None))
      continue
    sweep = (results or {}).get("sweep") or failure.get("sweep") or {}
    runs.append(Run(name, workdir, sweep.get("group", name), results, failure.get("error", "")))
  return runs


def run_value(results: dict, key: str) -> Optional[float]:
  if key == "trainable_parameters":
    return (results.get("weights") or {}).get("trainable_parameters")
  if key == "train_seconds" and results.get("stages"):
    return sum(stage.get("train_seconds", 0.0) for stage in results["stages"].values())
  value = results.get(key)
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def group_rows(runs: List[Run]) -> List[Row]:
  """One row per group of finished runs, in first-appearance order, each followed by its
  ensemble row when it has two or more runs."""
  groups = {}
  for run in runs:
    if run.results is not None:
      groups.setdefault(run.group, []).append(run)
  rows = []
  for label, members in groups.items():
    values = {c.key: [v for v in (run_value(m.results, c.key) for m in members) if v is not None]
              for c in COLUMNS}
    rows.append(Row(label, [m.name for m in members], values))
    if len(members) > 1:
      ensemble = ensemble_values(members)
      if ensemble:
        rows.append(Row(f"{label} (ensemble of {len(members)})", [m.name for m in members],
                        ensemble, ensemble=True))
  return rows


def predictions_dir(run: Run) -> str:
  """Where a run's prediction files are: its workdir's, or its last stage's."""
  stages = sorted((run.results or {}).get("stages") or {})
  return os.path.join(run.workdir, *stages[-1:], run_files.PREDICTIONS_DIR)


def ensemble_values(members: List[Run]) -> dict:
  """{column: [accuracy]} of the members' averaged probabilities, for each prediction file
  they all have on the same images; {} when they share none."""
  values = {}
  for column, name in ENSEMBLE_PREDICTIONS.items():
    paths = [os.path.join(predictions_dir(m), f"{name}.csv") for m in members]
    if not all(os.path.isfile(p) for p in paths):
      continue
    read = [predictions.read_probabilities(p) for p in paths]
    ids, labels = read[0][0], read[0][1]
    if any(r[0] != ids or not np.array_equal(r[1], labels) or r[3] != read[0][3] for r in read):
      continue  # other images (another split seed or data): not an ensemble of these runs
    mean = np.mean([r[2] for r in read], axis=0)
    values[column] = [float(np.mean(mean.argmax(axis=1) == labels))]
  if values:
    values["trainable_parameters"] = [sum(run_value(m.results, "trainable_parameters") or 0
                                          for m in members)]
    values["train_seconds"] = [sum(run_value(m.results, "train_seconds") or 0.0 for m in members)]
  return values


def shown_columns(rows: List[Row]) -> List[Column]:
  return [c for c in COLUMNS if any(r.values.get(c.key) for r in rows)]


def mean_std(values):
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def best_rows(rows: List[Row], column: Column) -> set:
  """Indices of the rows holding the column's best mean (ties all bold)."""
  if column.kind not in ("accuracy", "error"):
    return set()
  means = {i: mean_std(r.values.get(column.key))[0] for i, r in enumerate(rows)}
  means = {i: round(m, 6) for i, m in means.items() if m is not None}
  if len(means) < 2:
    return set()
  best = (max if column.kind == "accuracy" else min)(means.values())
  return {i for i, m in means.items() if m == best}


def format_cell(values, column: Column) -> str:
  mean, std = mean_std(values)
  if mean is None:
    return ""
  if column.kind in ("accuracy", "error"):
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
  if column.kind == "count":
    return f"{mean / 1e6:.2f}M" if mean >= 1e5 else f"{int(mean):,}"
  minutes = mean / 60
  return f"{minutes:.1f} min" + (f" ± {std / 60:.1f}" if std is not None else "")


def markdown(rows: List[Row]) -> str:
  columns = shown_columns(rows)
  best = {c.key: best_rows(rows, c) for c in columns}
  lines = ["| run group | seeds | " + " | ".join(
               c.title + (" (%)" if c.kind in ("accuracy", "error") else "") for c in columns)
           + " |", "|---|---|" + "---|" * len(columns)]
  for i, row in enumerate(rows):
    cells = []
    for c in columns:
      text = format_cell(row.values.get(c.key), c)
      cells.append(f"**{text}**" if text and i in best[c.key] else text)
    lines.append(f"| {row.label} | {len(row.runs)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def csv_text(rows: List[Row]) -> str:
  columns = shown_columns(rows)
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["run_group", "ensemble", "seeds", "runs"]
                  + [f"{c.key}_{s}" for c in columns for s in ("mean", "std")])
  for row in rows:
    cells = []
    for c in columns:
      mean, std = mean_std(row.values.get(c.key))
      cells += ["" if mean is None else f"{mean:.6g}", "" if std is None else f"{std:.6g}"]
    writer.writerow([row.label, int(row.ensemble), len(row.runs), " ".join(row.runs)] + cells)
  return out.getvalue()


def write(directory: str, stem: str = "") -> List[Row]:
  """Writes `<stem>.md` and `<stem>.csv` (default DIR/table); returns the rows."""
  rows = group_rows(read_runs(directory))
  stem = stem or os.path.join(directory, "table")
  atomic.write_text(stem + ".md", markdown(rows))
  atomic.write_text(stem + ".csv", csv_text(rows))
  return rows
