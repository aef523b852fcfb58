"""The `predict` program end to end on a folder of images: a trained run (`--workdir`, JAX)
against the same run exported to ONNX Runtime and LiteRT (`--model`).

  python benchmarks/predict.py --workdir=RUN [--input=../shared/data/pbc96] [--images=1000]
      [--repeats=5] [--formats=onnx,tflite] [--batch_size=128]

It copies the first --images images of --input (the same number from each class folder, in
name order) into a scratch ImageFolder, exports the run's best checkpoint to each format (float32
weights, the run's ood model inside), then runs `python -m bloodcell_jax.cli.predict` on that
folder --repeats times per source, the sources taking turns. A run is the whole program, as a
user runs it: start-up, loading, reading the images, the forward passes, the out-of-distribution
scores and the CSV. It prints one JSON object per source, {"bench": "predict", "source",
"seconds" (median), "images_per_s", "all_seconds", "same_pred" (the fraction of images given
the JAX run's class), "same_flag", "max_abs_difference" (of the probabilities, to JAX)}, and
then {"bench": "predict", "summary": ..., "fastest_export", "ratio"}: the exported runtimes'
fastest time over JAX's (above 1: `predict --workdir` is the faster).
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import step_setup  # pylint: disable=g-bad-import-order  (puts the project on sys.path)

from bloodcell_jax.data.sources import IMAGE_EXTENSIONS  # pylint: disable=g-import-not-at-top

ROOT = step_setup.ROOT
PROGRAM = [sys.executable, "-m", "bloodcell_jax.cli.predict"]
JAX = "jax (--workdir)"


def copy_images(source: str, count: int, destination: str) -> int:
  """The first count / (number of classes) images of each class folder of `source` (or the
  first `count` of a flat folder), copied into `destination`."""
  images_in = lambda d: sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTENSIONS))
  classes = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
  folders = [os.path.join(source, c) for c in classes] or [source]
  per_folder = -(-count // len(folders))
  copied = 0
  for folder in folders:
    target = os.path.join(destination, os.path.relpath(folder, source))
    os.makedirs(target, exist_ok=True)
    for name in images_in(folder)[:min(per_folder, count - copied)]:
      shutil.copy(os.path.join(folder, name), os.path.join(target, name))
      copied += 1
  return copied


def export(workdir: str, export_format: str, path: str) -> float:
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "bloodcell_jax.cli.export", f"--workdir={workdir}",
                  f"--format={export_format}", f"--out={path}"], check=True, cwd=ROOT,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  return time.perf_counter() - start


def predict_seconds(source_flag: str, folder: str, output: str, batch_size: int) -> float:
  start = time.perf_counter()
  done = subprocess.run(PROGRAM + [source_flag, f"--input={folder}", f"--output={output}",
                                   f"--batch_size={batch_size}"],
                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  seconds = time.perf_counter() - start
  if done.returncode:
    raise SystemExit(f"{' '.join(PROGRAM)} {source_flag} failed:\n{done.stderr[-2000:]}")
  return seconds


def read_rows(path: str) -> dict:
  with open(path, newline="") as f:
    return {row["id"]: row for row in csv.DictReader(f)}


def agreement(reference: dict, rows: dict) -> dict:
  """How far `rows` (one source's CSV) are from the JAX run's."""
  header = next(iter(reference.values()))
  columns = [c for c in header if c.startswith("p_")]
  same = lambda key: sum(rows[i][key] == r[key] for i, r in reference.items()) / len(reference)
  difference = max(abs(float(rows[i][c]) - float(r[c]))
                   for i, r in reference.items() for c in columns)
  return {"same_pred": same("pred"), "same_flag": same("flag") if "flag" in header else None,
          "max_abs_difference": float(f"{difference:.2g}")}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--input", default=os.path.join(ROOT, "..", "shared", "data", "pbc96"))
  parser.add_argument("--images", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--formats", default="onnx,tflite")
  parser.add_argument("--batch_size", type=int, default=128, help="predict's --batch_size "
                      "(its default: 128), for every source")
  args = parser.parse_args()
  workdir = os.path.abspath(args.workdir)
  with tempfile.TemporaryDirectory(prefix="bloodcell_predict_bench_") as scratch:
    folder = os.path.join(scratch, "images")
    count = copy_images(args.input, args.images, folder)
    sources = {JAX: f"--workdir={workdir}"}
    for export_format in args.formats.split(","):
      path = os.path.join(scratch, f"model.{export_format}")
      seconds = export(workdir, export_format, path)
      print(json.dumps({"bench": "predict", "exported": export_format,
                        "seconds_to_export": round(seconds, 1)}), flush=True)
      sources[{"onnx": "onnxruntime", "tflite": "litert"}.get(export_format, export_format)
              + " (--model)"] = f"--model={path}"
    outputs = {name: os.path.join(scratch, f"{i}.csv") for i, name in enumerate(sources)}
    times = {name: [] for name in sources}
    for _ in range(args.repeats):
      for name, flag in sources.items():
        times[name].append(predict_seconds(flag, folder, outputs[name], args.batch_size))
    reference = read_rows(outputs[JAX])
    medians = {}
    for name, seconds in times.items():
      medians[name] = statistics.median(seconds)
      print(json.dumps({"bench": "predict", "source": name, "images": count,
                        "seconds": round(medians[name], 2),
                        "images_per_s": round(count / medians[name], 1),
                        "all_seconds": [round(s, 2) for s in seconds],
                        **agreement(reference, read_rows(outputs[name]))}), flush=True)
  exported = {name: s for name, s in medians.items() if name != JAX}
  fastest = min(exported, key=exported.get)
  print(json.dumps({"bench": "predict", "summary": "exported runtimes' fastest / jax",
                    "fastest_export": fastest,
                    "ratio": round(exported[fastest] / medians[JAX], 3)}))


if __name__ == "__main__":
  main()
