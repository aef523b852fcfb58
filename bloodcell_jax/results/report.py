"""One self-contained HTML page per run or per sweep: DIR/report.html.

  python -m bloodcell_jax.report --workdir=DIR

For a run: its results, training curves, confusion matrices, precision / recall / F1 per
class, the most confident errors as thumbnails, the reliability diagram, the
augmentation preview, the cleaning findings and the config. For a sweep's directory
(it holds sweep.json, or runs in sub-directories): the results table, a chart of the
main metric per run group with error bars, and every run with a link to its report.
Images are embedded, so the file opens anywhere without a network. A training run
writes its own at the end, the sweep runner the sweep's.
"""

import base64
import io
import json
import os
import time
from typing import Optional

import jinja2
import numpy as np
from PIL import Image
from sklearn import metrics as sk_metrics

from bloodcell_jax import atomic
from bloodcell_jax.errors import UserError
from bloodcell_jax.results import plots, predictions, table
from bloodcell_jax.training import run_files

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
    autoescape=True, undefined=jinja2.StrictUndefined)


def _png_file(path: str) -> str:
  """The PNG at `path` as base64, or "" when there is none."""
  if not os.path.isfile(path):
    return ""
  with open(path, "rb") as f:
    return base64.b64encode(f.read()).decode("ascii")


def _png_array(image: np.ndarray) -> str:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
  return base64.b64encode(buffer.getvalue()).decode("ascii")


def _percent(value) -> str:
  return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def _minutes(seconds) -> str:
  return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "n/a"


def _render(template: str, path: str, **context) -> str:
  html = _TEMPLATES.get_template(template).render(
      written=time.strftime("%Y-%m-%d %H:%M"), **context)
  atomic.write_text(path, html)
  return path


def _shown(value, kind: str) -> str:
  if kind in ("accuracy", "error"):
    return _percent(value)
  if kind == "count":
    return f"{int(value):,}"
  if kind == "seconds":
    return _minutes(value)
  return f"{value:.4g}"


def _sections(results: dict) -> list:
  """(section, [(label, value)]) of every metric the run's evaluators declared, in their
  order, then the run's own numbers."""
  sections = {}
  for metric in [*table.declared_metrics(results), *table.RUN_COLUMNS]:
    value = table.run_value(results, metric.key)
    if value is not None:
      sections.setdefault(metric.section, []).append((metric.title, _shown(value, metric.kind)))
  return list(sections.items())


def _per_class(workdir: str, split: str):
  """Precision, recall, F1 and support per class from predictions/<split>.csv."""
  path = os.path.join(workdir, run_files.PREDICTIONS_DIR, f"{split}.csv")
  if not os.path.isfile(path):
    return []
  _, labels, probabilities, class_names = predictions.read_probabilities(path)
  precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
      labels, probabilities.argmax(axis=1), labels=range(len(class_names)), zero_division=0)
  rows = [{"name": name, "precision": f"{p:.3f}", "recall": f"{r:.3f}", "f1": f"{f:.3f}",
           "support": int(s)} for name, p, r, f, s in zip(class_names, precision, recall, f1,
                                                           support)]
  macro = sk_metrics.precision_recall_fscore_support(
      labels, probabilities.argmax(axis=1), labels=range(len(class_names)), average="macro",
      zero_division=0)
  rows.append({"name": "macro average", "precision": f"{macro[0]:.3f}",
               "recall": f"{macro[1]:.3f}", "f1": f"{macro[2]:.3f}", "support": len(labels)})
  return rows


def _worst_errors(workdir: str) -> list:
  path = os.path.join(workdir, run_files.WORST_ERRORS)
  if not os.path.isfile(path):
    return []
  with np.load(path) as saved:
    names = list(saved["class_names"])
    # With Grad-CAM: the image beside where the wrong class came from (explain.py).
    shown = saved["explained"] if "explained" in saved.files else saved["images"]
    return [{"image": _png_array(image), "id": str(image_id), "true": names[label],
             "predicted": names[predicted], "confidence": f"{confidence:.0%}"}
            for image, image_id, label, predicted, confidence in zip(
                shown, saved["ids"], saved["labels"], saved["predicted"],
                saved["confidence"])]


def _cleaning(results: dict):
  cleaning = results.get("cleaning")
  if not cleaning:
    return None
  report_dir = cleaning.get("report_dir", "")
  sheets = sorted(f for f in os.listdir(report_dir) if f.startswith("contact_")
                  and f.endswith(".png")) if os.path.isdir(report_dir) else []
  return {"num_removed": cleaning.get("num_removed"), "num_input": cleaning.get("num_input"),
          "report_dir": report_dir, "removed": sorted((cleaning.get("removed") or {}).items()),
          "sheets": [_png_file(os.path.join(report_dir, f)) for f in sheets[:4]]}


def _stages(workdir: str, results: dict) -> list:
  return [{"name": name, "val": _percent(stage.get("val_accuracy")),
           "augmented": _percent(stage.get("augmented_val_accuracy")),
           "time": _minutes(stage.get("train_seconds")),
           "link": f"{name}/{run_files.REPORT}"
                   if os.path.isfile(os.path.join(workdir, name, run_files.REPORT)) else ""}
          for name, stage in sorted((results.get("stages") or {}).items())]


def write_run_report(workdir: str) -> str:
  """Writes `workdir`/report.html for a finished run; returns its path."""
  results = run_files.read_json(os.path.join(workdir, run_files.RESULTS))
  if results is None:
    raise UserError(f"--workdir={workdir}: no results.json; the run has not finished")
  curves_path = os.path.join(workdir, run_files.TRAINING_CURVES)
  if not plots.plot_curves(run_files.read_metrics(workdir), curves_path):
    curves_path = ""
  config_path = os.path.join(workdir, run_files.CONFIG)
  config_text = open(config_path).read() if os.path.isfile(config_path) else "(not recorded)"
  sweep = dict(results.get("sweep") or {})
  if sweep:
    sweep["overrides_json"] = json.dumps(sweep.get("overrides", {}), sort_keys=True)
  dataset = results.get("dataset") or {}
  calibration_text = (
      f"Temperature scaling fitted on the {results.get('num_val')} validation images: "
      f"T = {results.get('temperature', float('nan')):.3f}; ECE "
      f"{_percent(results.get('val_ece'))} -> {_percent(results.get('val_ece_calibrated'))}, "
      f"NLL {results.get('val_nll', float('nan')):.4f} -> "
      f"{results.get('val_nll_calibrated', float('nan')):.4f}.")
  return _render(
      "run_report.html.j2", os.path.join(workdir, run_files.REPORT),
      title=f"Run {os.path.basename(os.path.abspath(workdir))}",
      subtitle=f"{results.get('model', '?')} on {dataset.get('name', '?')}"
               f"{' (synthetic)' if dataset.get('synthetic') else ''}: "
               f"{results.get('num_train')} training, {results.get('num_val')} validation, "
               f"{results.get('num_test')} test images; {results.get('epochs')} epochs, "
               f"{results.get('steps')} steps, best at step {results.get('best_step')}",
      sections=_sections(results), sweep=sweep, stages=_stages(workdir, results),
      curves=_png_file(curves_path) if curves_path else "",
      confusions=[(name, image) for name, image in
                  (("validation", _png_file(os.path.join(workdir, "confusion_val.png"))),
                   ("test", _png_file(os.path.join(workdir, "confusion_test.png")))) if image],
      per_class=[(split, rows) for split, rows in
                 (("validation", _per_class(workdir, "val")),
                  ("test", _per_class(workdir, "test"))) if rows],
      worst=_worst_errors(workdir),
      reliability=_png_file(os.path.join(workdir, "reliability_val.png")),
      calibration_text=calibration_text,
      preview=_png_file(os.path.join(workdir, run_files.AUGMENTATION_PREVIEW)),
      cleaning=_cleaning(results), config_text=config_text)


def _table_context(results_table: table.Table) -> dict:
  columns, rows = results_table.columns, results_table.rows
  best = {c.key: table.best_rows(rows, c) for c in columns}
  return {
      "titles": [c.title for c in columns],
      "rows": [{"label": row.label, "seeds": len(row.runs), "ensemble": row.ensemble,
                "cells": [{"text": table.format_cell(row.values.get(c.key), c),
                           "bold": i in best[c.key]} for c in columns]}
               for i, row in enumerate(rows)]}


def write_sweep_report(directory: str, results_table: Optional[table.Table] = None,
                       metric: str = "val_accuracy") -> str:
  """Writes `directory`/report.html for a sweep (or any directory of runs); `results_table`:
  its table, when the caller has it (the ensemble rows read every run's predictions)."""
  runs = table.read_runs(directory)
  results_table = table.build(runs) if results_table is None else results_table
  rows = results_table.rows
  if not runs:
    raise UserError(f"--workdir={directory}: no run in it (no */results.json, failure.json or "
                    "sweep.json)")
  record = run_files.read_json(os.path.join(directory, run_files.SWEEP_RECORD)) or {}
  indices = {r["name"]: r["index"] for r in record.get("runs", [])}
  overrides = {r["name"]: r["overrides"] for r in record.get("runs", [])}
  grouped = [r for r in rows if not r.ensemble and r.values.get(metric)]
  chart_path = os.path.join(directory, run_files.SWEEP_CHART)
  if grouped:
    stats = [table.mean_std(r.values[metric]) for r in grouped]
    plots.plot_metric_by_group([r.label for r in grouped], [m for m, _ in stats],
                               [s or 0.0 for _, s in stats], metric, chart_path)
  run_rows = []
  for run in runs:
    state = ("finished" if run.results is not None else "damaged" if run.damaged
             else "failed" if run.error else "pending")
    link = os.path.join(run.name, run_files.REPORT)
    run_rows.append({
        "index": indices.get(run.name, ""), "name": run.name, "group": run.group,
        "status": state, "error": run.error,
        "val": _percent((run.results or {}).get("val_accuracy")) if run.results else "",
        "overrides": json.dumps(overrides.get(run.name, (run.results or {}).get(
            "sweep", {}).get("overrides", {})), sort_keys=True),
        "link": link if os.path.isfile(os.path.join(directory, link)) else ""})
  finished = sum(r["status"] == "finished" for r in run_rows)
  return _render(
      "sweep_report.html.j2", os.path.join(directory, run_files.REPORT),
      title=f"Sweep {os.path.basename(os.path.abspath(directory))}",
      subtitle=f"{record.get('file', '')}: {finished} of {len(run_rows)} runs finished",
      table=_table_context(results_table), chart=_png_file(chart_path) if grouped else "",
      chart_metric=metric, runs=run_rows)
