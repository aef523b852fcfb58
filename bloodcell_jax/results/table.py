"""The results table of a directory of runs (a sweep's, or any): one row per run group.

  bloodcell-table DIR [--out=DIR/table]

Its columns are the metrics the runs' evaluators declared (results.json "metrics", see
bloodcell_jax/evaluation/evaluators.py), then the trainable parameters and the training time.
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
import glob
import io
import os
from typing import List, Optional

import numpy as np

from bloodcell_jax import atomic, output_paths
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import evaluators
from bloodcell_jax.evaluation.evaluators import Metric
from bloodcell_jax.results import predictions
from bloodcell_jax.training import run_files

# The run's own numbers, after the evaluators' columns.
RUN_COLUMNS = (Metric("trainable_parameters", "trainable params", "count", section="Run"),
               Metric("train_seconds", "training time", "seconds", section="Run"))


@dataclasses.dataclass
class RunRecord:
  """A run as the table sees it: its results.json, or the error it failed with."""
  name: str
  workdir: str
  group: str  # its label in the table
  results: Optional[dict]  # None: not finished
  error: str = ""  # the one-line error of a failed or damaged run
  damaged: bool = False  # finished once, but a file it left is unreadable


@dataclasses.dataclass
class Row:
  label: str
  runs: List[str]
  values: dict  # column key -> values over the runs (one for an ensemble)
  ensemble: bool = False


@dataclasses.dataclass
class Table:
  columns: List[Metric]  # those with a value in some row, in the runs' declared order
  rows: List[Row]
  damaged: List[RunRecord] = dataclasses.field(default_factory=list)  # shown under the rows


def declared_metrics(results: dict) -> List[Metric]:
  """The metrics a run's evaluators declared (results.json "metrics"); for a run written
  before the declarations were recorded, its numeric accuracies and calibration errors."""
  if "metrics" in results:
    return evaluators.from_records(results["metrics"])
  inferred = []
  for key, value in results.items():
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and (key.endswith("_accuracy") or key.endswith("_ece")
                    or key.endswith("_ece_calibrated")) and key != "balanced_val_accuracy":
      kind = "accuracy" if key.endswith("accuracy") else "error"
      inferred.append(Metric(key, key.replace("_", " "), kind,
                             predictions=key.removesuffix("_accuracy") if kind == "accuracy"
                             and "balanced" not in key else ""))
  return inferred


def table_columns(runs: List[RunRecord]) -> List[Metric]:
  """Every column a run declares (first declaration wins), then the run's own columns."""
  columns = {}
  for run in runs:
    for metric in declared_metrics(run.results or {}):
      if metric.table:
        columns.setdefault(metric.key, metric)
  return list(columns.values()) + list(RUN_COLUMNS)


def read_runs(directory: str) -> List[RunRecord]:
  """Every run under `directory`: its sub-directories with a results.json or a recorded
  failure, in name order (a sweep's own order when it wrote sweep.json)."""
  if not os.path.isdir(directory):
    raise UserError(f"{directory}: no such directory")
  record = run_files.read_json(os.path.join(directory, run_files.SWEEP_RECORD)) or {}
  names = [r["name"] for r in record.get("runs", [])] or sorted(os.listdir(directory))
  runs = []
  for name in names:
    run = read_run(os.path.join(directory, name), name)
    if run is not None:
      runs.append(run)
    elif record:  # a sweep's pending run
      runs.append(RunRecord(name, os.path.join(directory, name), name, None))
  return runs


def read_run(workdir: str, name: str) -> Optional[RunRecord]:
  """A finished, failed or damaged run; None when it left neither results nor a failure."""
  try:
    results = run_files.read_json(os.path.join(workdir, run_files.RESULTS))
    failure = run_files.read_json(os.path.join(workdir, run_files.FAILURE)) or {}
    if results is not None:
      check_predictions(workdir, results)
  except run_files.DamagedFile as e:
    return RunRecord(name, workdir, name, None, str(e), damaged=True)
  if results is None and not failure:
    return None
  sweep = (results or {}).get("sweep") or failure.get("sweep") or {}
  return RunRecord(name, workdir, sweep.get("group", name), results, failure.get("error", ""))


def check_predictions(workdir: str, results: dict) -> None:
  """Reads every prediction file of a finished run: a damaged one raises DamagedFile."""
  for path in sorted(glob.glob(os.path.join(predictions_dir(workdir, results), "*.csv"))):
    predictions.read_probabilities(path)


def run_value(results: dict, key: str) -> Optional[float]:
  if key == "trainable_parameters":
    return (results.get("weights") or {}).get("trainable_parameters")
  if key == "train_seconds" and results.get("stages"):
    return sum(stage.get("train_seconds", 0.0) for stage in results["stages"].values())
  value = results.get(key)
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def build(runs: List[RunRecord]) -> Table:
  """One row per group of finished runs, in first-appearance order, each followed by its
  ensemble row when it has two or more runs."""
  columns = table_columns(runs)
  groups = {}
  for run in runs:
    if run.results is not None:
      groups.setdefault(run.group, []).append(run)
  rows = []
  for label, members in groups.items():
    values = {c.key: [v for v in (run_value(m.results, c.key) for m in members) if v is not None]
              for c in columns}
    rows.append(Row(label, [m.name for m in members], values))
    if len(members) > 1:
      ensemble = ensemble_values(members, columns)
      if ensemble:
        rows.append(Row(f"{label} (ensemble of {len(members)})", [m.name for m in members],
                        ensemble, ensemble=True))
  return Table([c for c in columns if any(r.values.get(c.key) for r in rows)], rows,
               [run for run in runs if run.damaged])


def predictions_dir(workdir: str, results: Optional[dict]) -> str:
  """Where a run's prediction files are: its workdir's, or its last stage's."""
  stages = sorted((results or {}).get("stages") or {})
  return os.path.join(workdir, *stages[-1:], run_files.PREDICTIONS_DIR)


def ensemble_values(members: List[RunRecord], columns: List[Metric]) -> dict:
  """{column: [accuracy]} of the members' averaged probabilities, for each accuracy column
  whose prediction file they all have on the same images; {} when they share none."""
  values = {}
  for column in columns:
    name = column.predictions
    if not name or column.kind != "accuracy":
      continue
    paths = [os.path.join(predictions_dir(m.workdir, m.results), f"{name}.csv")
             for m in members]
    if not all(os.path.isfile(p) for p in paths):
      continue
    read = [predictions.read_probabilities(p) for p in paths]
    ids, labels = read[0][0], read[0][1]
    if any(r[0] != ids or not np.array_equal(r[1], labels) or r[3] != read[0][3] for r in read):
      continue  # other images (another split seed or data): not an ensemble of these runs
    mean = np.mean([r[2] for r in read], axis=0)
    values[column.key] = [float(np.mean(mean.argmax(axis=1) == labels))]
  if values:
    values["trainable_parameters"] = [sum(run_value(m.results, "trainable_parameters") or 0
                                          for m in members)]
    values["train_seconds"] = [sum(run_value(m.results, "train_seconds") or 0.0 for m in members)]
  return values


def mean_std(values):
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def best_rows(rows: List[Row], column: Metric) -> set:
  """Indices of the rows holding the column's best mean (ties all bold)."""
  if column.kind not in ("accuracy", "error"):
    return set()
  means = {i: mean_std(r.values.get(column.key))[0] for i, r in enumerate(rows)}
  means = {i: round(m, 6) for i, m in means.items() if m is not None}
  if len(means) < 2:
    return set()
  best = (max if column.kind == "accuracy" else min)(means.values())
  return {i for i, m in means.items() if m == best}


def format_cell(values, column: Metric) -> str:
  mean, std = mean_std(values)
  if mean is None:
    return ""
  if column.kind in ("accuracy", "error"):
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
  if column.kind == "count":
    return f"{mean / 1e6:.2f}M" if mean >= 1e5 else f"{int(mean):,}"
  minutes = mean / 60
  return f"{minutes:.1f} min" + (f" ± {std / 60:.1f}" if std is not None else "")


def markdown(table: Table) -> str:
  columns, rows = table.columns, table.rows
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
  if table.damaged:
    lines += ["", "Damaged runs, left out of the rows above (rerun the sweep to redo them):"]
    lines += [f"- {run.name}: {run.error}" for run in table.damaged]
  return "\n".join(lines) + "\n"


def csv_text(table: Table) -> str:
  columns, rows = table.columns, table.rows
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


def write(directory: str, stem: str = "", flag: str = "--out") -> Table:
  """Writes `<stem>.md` and `<stem>.csv` (default DIR/table) when some run finished or is
  damaged; returns the table."""
  if stem:
    output_paths.file_output(stem + ".md", flag)
  table = build(read_runs(directory))
  stem = stem or os.path.join(output_paths.directory_output(directory, "DIR"), "table")
  if not table.rows and not table.damaged:
    return table
  atomic.write_text(stem + ".md", markdown(table))
  atomic.write_text(stem + ".csv", csv_text(table))
  return table
