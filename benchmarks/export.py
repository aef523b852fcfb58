"""Exported models against the JAX model: conversion time, file size, equality, and images/s.

  python benchmarks/export.py [--models=cnn,efficientnetv2-s] [--image_size=96] [--repeats=10]
  python benchmarks/export.py --workdir=RUN  # a trained run's best checkpoint instead

For each model (random weights unless --workdir) it writes a SavedModel, ONNX (tf2onnx from
LiteRT, the route bloodcell_jax.export takes, and jax2onnx directly when it is installed),
and LiteRT in float32, float16 and int8 weights. It prints one JSON object per line:
{"bench": "export", "model", "runtime", "seconds_to_export", "bytes", "max_abs_difference"
(to JAX, on 7 generated cells), "onnx_check" (onnx.checker with full shape inference),
"images_per_s": {"1": ..., "64": ...}}, and with --workdir "val_accuracy" on the run's
validation images (predictions/val.csv), the accuracy int8 weights cost. Throughput is the
median over --repeats calls after a warm-up call, on every core the machine has (runtimes at
their default thread counts).
"""

import argparse
import contextlib
import functools
import io
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from bloodcell_jax import runtime  # pylint: disable=g-bad-import-order

runtime.set_up()
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from bloodcell_jax import models
from bloodcell_jax.data import image_set, sources, synthetic  # pylint: disable=g-import-not-at-top
from bloodcell_jax.evaluation import inference
from bloodcell_jax.export import runtimes
from bloodcell_jax.export import writer as export  # pylint: disable=g-import-not-at-top
from bloodcell_jax.results import predictions
from bloodcell_jax.training import run_files, steps

BATCHES = (1, 64)


def images_per_s(predict, images, repeats):
  predict(images)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    predict(images)
    times.append(time.perf_counter() - start)
  return round(len(images) / float(np.median(times)), 1)


def random_exportable(name, image_size):
  """Initial weights with the classifier scaled to logits of spread 3: confident outputs,
  where an export's error would show (initial ones are near uniform)."""
  model = models.get_model(name, num_classes=8)
  params, batch_stats = jax.jit(functools.partial(steps.init_variables, model,
                                                  image_size=image_size))(jax.random.PRNGKey(0))
  cells = synthetic.generate(16, image_size, seed=2).images.astype(np.float32)
  logits = jax.jit(functools.partial(model.apply, train=False))(
      {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params},
      cells)
  head = models.get_spec(name).head[-1]
  factor = 3.0 / float(np.std(logits))
  params = {**params, head: {k: v * factor for k, v in params[head].items()}}
  metadata = {"class_names": list(image_set.PBC_CLASS_NAMES), "image_size": image_size,
              "model": name, "source_run": None, "val_accuracy": None}
  return model, export.Exportable(export.output_function(model),
                                  jax.device_get({"params": params, "batch_stats": batch_stats}),
                                  image_size, metadata)


def jax_predict(model, variables):
  """What `predict --workdir` runs: the jitted predict step, XLA:CPU's own op choices."""
  state = steps.TrainState(step=np.zeros((), np.int32), params=variables["params"],
                           batch_stats=variables["batch_stats"], opt_state=(), rng=None)
  step = jax.jit(functools.partial(steps.predict_step, model=model))
  return lambda images: np.asarray(step(state, images.astype(np.float32), np.float32(1.0)))


def jax2onnx_file(exportable, path):
  """ONNX written by jax2onnx straight from the JAX function (not a dependency: measured only
  where it is installed)."""
  import jax.numpy as jnp
  from jax2onnx import to_onnx
  size = exportable.image_size
  with contextlib.redirect_stdout(io.StringIO()):  # it prints its module patches
    probabilities = lambda variables, images: exportable.outputs(variables, images)[
        "probabilities"]
    model = to_onnx(functools.partial(export.with_standard_ops(probabilities),
                                      exportable.variables),
                    [jax.ShapeDtypeStruct(("B", size, size, 3), jnp.uint8)], opset=21)
  import onnx
  onnx.save(model, path)


def onnx_check(path):
  import onnx
  try:
    onnx.checker.check_model(path, full_check=True)
    return "ok"
  except Exception as e:  # pylint: disable=broad-except
    return str(e).splitlines()[0][:200]


def onnx_session(path):
  import onnxruntime
  session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
  name = session.get_inputs()[0].name
  return lambda images: session.run(None, {name: images})[0]


def export_routes(exportable, directory):
  """(runtime name, export function writing the file, file path, predict builder)."""
  def with_format(export_format, weights="float32"):
    return lambda path: export.export(exportable, export_format, path, weights)
  load = lambda path: runtimes.load(path).predict
  return [
      ("tensorflow_saved_model", with_format("saved_model"), "saved_model", load),
      ("onnxruntime (tf2onnx from LiteRT)", with_format("onnx"), "model.onnx",
       lambda path: onnx_session(path)),
      ("onnxruntime (jax2onnx)", functools.partial(jax2onnx_file, exportable), "jax2onnx.onnx",
       lambda path: onnx_session(path)),
      ("litert float32", with_format("tflite"), "f32.tflite", load),
      ("litert float16", with_format("tflite", "float16"), "f16.tflite", load),
      ("litert int8", with_format("tflite", "int8"), "int8.tflite", load),
  ]


def validation_set(workdir, config):
  """(uint8 images, labels) of the run's validation images, as its predictions/val.csv lists
  them."""
  ids, labels, _, _ = predictions.read_probabilities(
      os.path.join(workdir, run_files.PREDICTIONS_DIR, "val.csv"))
  images = np.stack([sources.read_image_file(os.path.join(config.data.train, i),
                                             config.image_size)[0] for i in ids])
  return images, labels


def accuracy(predict, labelled):
  images, labels = labelled
  probabilities = np.concatenate([predict(images[i:i + 64]) for i in range(0, len(images), 64)])
  return round(float(np.mean(probabilities.argmax(axis=1) == labels)), 5)


def bench_model(model, exportable, repeats, labelled=None):
  name = exportable.metadata["model"]
  size = exportable.image_size
  cells = synthetic.generate(7, size, seed=1).images
  batches = {b: np.resize(cells, (b, size, size, 3)) for b in BATCHES}
  reference = jax_predict(model, exportable.variables)
  want = reference(cells)
  record = {"bench": "export", "model": name, "image_size": size, "runtime": "jax (jit)",
            "max_probability": round(float(want.max()), 4),
            "images_per_s": {str(b): images_per_s(reference, batches[b], repeats)
                             for b in BATCHES}}
  if labelled is not None:
    record["val_accuracy"] = accuracy(reference, labelled)
  yield record
  with tempfile.TemporaryDirectory() as directory:
    for runtime_name, write, file_name, predictor in export_routes(exportable, directory):
      path = os.path.join(directory, file_name)
      record = {"bench": "export", "model": name, "image_size": size, "runtime": runtime_name}
      start = time.perf_counter()
      try:
        write(path)
      except Exception as e:  # pylint: disable=broad-except
        yield {**record, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        continue
      record["seconds_to_export"] = round(time.perf_counter() - start, 1)
      record["bytes"] = runtimes.size_bytes(path)
      if path.endswith(".onnx"):
        record["onnx_check"] = onnx_check(path)
      try:
        predict = predictor(path)
        record["max_abs_difference"] = float(np.abs(predict(cells) - want).max())
        record["images_per_s"] = {str(b): images_per_s(predict, batches[b], repeats)
                                  for b in BATCHES}
        if labelled is not None:
          record["val_accuracy"] = accuracy(predict, labelled)
      except Exception as e:  # pylint: disable=broad-except
        record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      yield record


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="cnn,efficientnetv2-s")
  parser.add_argument("--image_size", type=int, default=96)
  parser.add_argument("--workdir", action="append", default=[])
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  import logging

  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("tf2onnx").setLevel(logging.WARNING)
  subjects = [(*random_exportable(name, args.image_size), None)
              for name in args.models.split(",") if not args.workdir]
  for workdir in args.workdir:
    config, class_names, model, _, _ = inference.load_run(workdir)
    subjects.append((model, export.run_exportable(workdir), validation_set(workdir, config)))
  for model, exportable, labelled in subjects:
    for record in bench_model(model, exportable, args.repeats, labelled):
      print(json.dumps(record), flush=True)


if __name__ == "__main__":
  main()
