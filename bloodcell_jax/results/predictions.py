"""Prediction files (predictions/*.csv of a run, `bloodcell-predict`'s output): one row per image
with its class probabilities."""

import csv
import io

import numpy as np

from bloodcell_jax import atomic
from bloodcell_jax.training import run_files


def write_probabilities(path: str, ids, probabilities: np.ndarray, class_names,
                        labels=None, extra=None, abstain=None) -> None:
  """One row per image: `id`, (`label`,) `pred`, `pred_name`, `confidence`, the `extra`
  columns ({name: one value per image}, numbers written with 4 decimals), `p_<class>`...;
  `pred` and `pred_name` are left empty where `abstain` is True."""
  extra = extra or {}
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(["id"] + ["label"] * (labels is not None) + ["pred", "pred_name", "confidence"]
                  + list(extra) + [f"p_{c}" for c in class_names])
  shown = lambda v: f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)
  for row, (image_id, probs) in enumerate(zip(ids, probabilities)):
    pred = int(np.argmax(probs))
    label = [int(labels[row])] if labels is not None else []
    answer = ["", ""] if abstain is not None and abstain[row] else [pred, class_names[pred]]
    writer.writerow([image_id] + label + answer + [f"{probs[pred]:.6f}"]
                    + [shown(values[row]) for values in extra.values()]
                    + [f"{p:.6f}" for p in probs])
  atomic.write_text(path, out.getvalue())


def read_probabilities(path: str):
  """(ids, labels or None, probabilities, class names) of a `write_probabilities` file; a
  run_files.DamagedFile when it is cut short or is not one."""
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    first_p = next(i for i, name in enumerate(header) if name.startswith("p_"))
    class_names = [name[2:] for name in header[first_p:]]
    if any(len(r) != len(header) for r in rows):
      raise ValueError(f"a row without the header's {len(header)} fields")
    ids = [r[0] for r in rows]
    labels = (np.array([int(r[header.index("label")]) for r in rows])
              if "label" in header else None)
    probabilities = np.array([[float(v) for v in r[first_p:]] for r in rows],
                             np.float64).reshape(len(rows), len(class_names))
  except (OSError, UnicodeDecodeError) as e:
    raise run_files.damaged(path, str(e)) from None
  except (IndexError, StopIteration, ValueError, csv.Error) as e:
    reason = str(e) if isinstance(e, ValueError) else "no header with p_<class> columns"
    raise run_files.damaged(path, reason) from None
  if not np.all(np.isfinite(probabilities)):
    raise run_files.damaged(path, "probabilities that are not numbers")
  return ids, labels, probabilities, class_names
