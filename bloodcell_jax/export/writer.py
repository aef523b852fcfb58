"""Exports a trained run for inference outside JAX: TensorFlow SavedModel, ONNX or LiteRT.

  bloodcell-export --workdir=DIR --format=saved_model --out=exported/cnn
  bloodcell-export --workdir=DIR --format=onnx --out=cnn.onnx --tta=d4 --calibrated
  bloodcell-export --workdir=DIR --format=tflite --tflite_weights=float16 --out=cnn.tflite

Every exported model takes uint8 RGB images (N, S, S, 3), any N and S the run's image size,
and returns class probabilities (N, classes): the cast to float and the model's own input
scaling are inside, BatchNorm runs on its running statistics, dropout is off, and --tta and
--calibrated are baked in. The best checkpoint is exported (--ema: its weight average).
Class names, image size, the source run, its config digest and validation accuracy travel
inside the file (`metadata`). A run with an out-of-distribution model (ood.npz) also gives
the untransformed image's `logits` and penultimate `features`, and the file carries the
model itself (without its kNN bank unless it flags with kNN), so that `predict --model`
flags images as `predict --workdir` does: an `ood.npz` asset of a SavedModel, a base64
`bloodcell_jax_ood` entry of an ONNX file's metadata_props, a `bloodcell_jax_ood` buffer of a
LiteRT file.

Routes, each the one that converts every registered model on the pinned versions:
* SavedModel: jax2tf (jax.experimental), which serialises the model as StableHLO inside an
  XlaCallModule op, for CPU, CUDA and TPU, with the weights as variables. It ships with jax
  itself, so it cannot drift from the pinned JAX; orbax-export wraps the same converter but
  pins its own ranges.
* LiteRT: TensorFlow's converter from a SavedModel traced with standard ops
  (bloodcell_jax/models/portable.py), less the broadcasts a dynamic batch spells out
  (litert_graph.py); float32, float16 or dynamic-range int8 weights.
* ONNX: tf2onnx from the float32 LiteRT model, opset 18. tf2onnx cannot read XlaCallModule
  ops, so not the SavedModel; why not jax2onnx: docs/predict-and-export.md.

After writing, the file is run on generated cells at batch sizes 1 and 7 and compared with
the JAX model; a larger difference than the format's tolerance is an error.
"""

import base64
import dataclasses
import datetime
import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Callable, Optional

import numpy as np

from bloodcell_jax import atomic, errors, output_paths
from bloodcell_jax.config import recorded
from bloodcell_jax.errors import UserError
from bloodcell_jax.export import litert_graph, runtimes
from bloodcell_jax.training import run_files, steps
from bloodcell_jax.training import workdir as workdir_lib

FORMATS = ("saved_model", "onnx", "tflite")
TFLITE_WEIGHTS = ("float32", "float16", "int8")
# tf2onnx's newest opset; ONNX Runtime's CPU provider runs it and newer ones.
ONNX_OPSET = 18
# A SavedModel runs wherever TensorFlow Serving does.
SERVING_PLATFORMS = ("cpu", "cuda", "tpu")
# Largest |exported - JAX| probability accepted by the check after export.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "int8": None}  # int8: reported, not checked


@dataclasses.dataclass
class Exportable:
  """A pure function of (variables, uint8 images) to the exported outputs ({name: array}),
  with its weights, what the exported file says about itself, and the out-of-distribution
  model it carries (ood.to_bytes; empty: none)."""
  outputs: Callable[[Any, Any], Any]
  variables: Any
  image_size: int
  metadata: dict
  ood: bytes = b""


def output_function(model, tta: str = "", temperature: float = 1.0, layer: str = ""):
  """(variables, uint8 images) -> {"probabilities"}, and with `layer` (the classifier) the
  untransformed image's "logits" and "features", which the out-of-distribution model scores."""
  import jax.numpy as jnp

  from bloodcell_jax.evaluation import tta as tta_lib
  views = tta_lib.views_of(tta, "--tta")

  def outputs(variables, images):
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), opt_state=(),
                             rng=None)
    images = images.astype(jnp.float32)
    found = {"probabilities": steps.predict_step(state, images, temperature, model=model,
                                                 views=views)}
    if layer:
      found["logits"], found["features"] = steps.logits_and_features(state, images, model=model,
                                                                     layer=layer)
    return found
  return outputs


def _traced_within(context, function):
  """`function`, traced inside `context()` whenever it is traced."""
  def traced(*args):
    with context():
      return function(*args)
  return traced


def with_standard_ops(function):
  from bloodcell_jax.models import portable
  return _traced_within(portable.standard_ops, function)


def serializable(function):
  """`function` traced without this process's custom calls (models/native.py)."""
  from bloodcell_jax.models import native
  return _traced_within(native.serialized, function)


def run_exportable(workdir: str, ema: bool = False, tta: str = "",
                   calibrated: bool = False) -> Exportable:
  """The best checkpoint of a training run, ready to export."""
  import jax

  from bloodcell_jax.evaluation import inference, ood
  config, class_names, model, state, weights = inference.load_run(workdir, ema)
  if getattr(model, "dtype", None) is not None:
    model = model.clone(dtype=np.float32)  # a portable graph, whatever this CPU trained in
  temperature = inference.run_temperature(workdir, ema) if calibrated else 1.0
  accuracy = checkpoint_val_accuracy(workdir, weights)
  trust, layer = inference.ood_model(workdir, ema), inference.classifier_layer(config)
  if trust is None or trust.features is None or not layer:
    trust, layer = None, ""  # the scores need the logits and features of a known layer
  metadata = {
      "class_names": list(class_names), "image_size": int(config.image_size),
      "model": config.model.name, "source_run": os.path.abspath(workdir),
      "config_digest": recorded.config_digest(config),
      "val_accuracy": accuracy, "weights": "ema" if ema else f"{weights.kind} checkpoint",
      "checkpoint": {"kind": weights.kind, "step": weights.step, "ema": ema,
                     "val_accuracy": accuracy, "skipped": list(weights.skipped),
                     "described": weights.describe()},
      "tta": tta or "none", "temperature": temperature,
      "ood": trust.describe() if trust is not None else None,
  }
  variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  return Exportable(output_function(model, tta, temperature, layer), variables,
                    int(config.image_size), metadata,
                    ood.to_bytes(ood.for_export(trust)) if trust is not None else b"")


def checkpoint_val_accuracy(workdir: str, weights) -> Optional[float]:
  """The validation accuracy of the checkpoint the weights came from: the run's result for its
  best step, else the one logged at that step (metrics.jsonl); None when neither is known."""
  key = "ema_val_accuracy" if weights.ema else "val_accuracy"
  try:
    results = run_files.read_json(os.path.join(workdir, run_files.RESULTS)) or {}
  except run_files.DamagedFile:
    results = {}
  if weights.kind == "best" and results.get("best_step") in (None, weights.step):
    if results.get(key) is not None:
      return results[key]
  return next((record[key] for record in run_files.read_metrics(workdir)
               if record.get("step") == weights.step and key in record), None)


def check_out(out: str, export_format: str, workdir: str) -> str:
  """--out checked before any work; its absolute path."""
  suffix = {"onnx": ".onnx", "tflite": ".tflite"}.get(export_format)
  if suffix and not out.endswith(suffix):
    raise UserError(f"--out={out}: a --format={export_format} file must end in {suffix}")
  absolute = os.path.abspath(out)
  if export_format != "saved_model" or not os.path.exists(absolute):
    return output_paths.file_output(out, "--out", [("--workdir", workdir)])
  if not os.path.isdir(absolute):
    raise UserError(f"--out={out}: is a file; a SavedModel is a directory")
  if not os.path.isfile(os.path.join(absolute, "saved_model.pb")):
    raise UserError(f"--out={out}: an existing directory that is not a SavedModel; choose a "
                    "new path")
  output_paths.directory_output(os.path.dirname(absolute), "--out's directory")
  output_paths.directory_output(absolute, "--out")
  return absolute


def _full_metadata(exportable: Exportable, export_format: str, weights: str) -> dict:
  return {**exportable.metadata, "format": export_format, "tflite_weights": weights,
          "input": f"uint8 RGB images [N, {exportable.image_size}, {exportable.image_size}, 3]",
          "output": "class probabilities [N, classes]" + (
              "; logits [N, classes] and penultimate features [N, D] of the untransformed "
              "image, for the out-of-distribution model" if exportable.ood else ""),
          "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_saved_model(exportable: Exportable, out: str, metadata: dict,
                      for_conversion: bool = False) -> None:
  """A SavedModel whose `serving_default` maps `images` to `probabilities` (and `logits` and
  `features` with an ood model); the metadata is the asset `assets/metadata.json` and the
  function `metadata()`, the ood model the asset `assets/ood.npz`.

  For serving, the model runs on CPU, CUDA and TPU with each platform's own ops (XLA:CPU's
  grouped convolution would make EfficientNetV2 3 to 5x slower on CPU). `for_conversion` traces
  it with standard ops for one platform, which LiteRT's converter needs.
  """
  import tensorflow as tf
  from jax.experimental import jax2tf

  size = exportable.image_size
  module = tf.Module()
  module.variables_ = tf.nest.map_structure(tf.Variable, exportable.variables)
  function = exportable.outputs
  if for_conversion:
    function, platforms = with_standard_ops(function), None
  else:
    function, platforms = serializable(function), SERVING_PLATFORMS
  converted = jax2tf.convert(function, with_gradient=False,
                             native_serialization_platforms=platforms,
                             polymorphic_shapes=[None, f"(batch, {size}, {size}, 3)"])

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
  def serve(images):
    return converted(module.variables_, images)

  with tempfile.TemporaryDirectory() as scratch:
    asset_path = os.path.join(scratch, runtimes.METADATA_FILE)
    atomic.write_json(asset_path, metadata)
    module.metadata_asset = tf.saved_model.Asset(asset_path)
    if exportable.ood:
      ood_path = os.path.join(scratch, runtimes.OOD_FILE)
      atomic.write_bytes(ood_path, exportable.ood)
      module.ood_asset = tf.saved_model.Asset(ood_path)
    text = json.dumps(metadata)
    module.metadata = tf.function(lambda: tf.constant(text), input_signature=[])
    module.serve = serve
    tf.saved_model.save(module, out, signatures={"serving_default": serve})


def tflite_model(saved_model: str, weights: str, metadata: dict, ood: bytes = b"") -> bytes:
  """The LiteRT flatbuffer of a SavedModel, with the metadata and the ood model as named
  buffers."""
  import tensorflow as tf
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
  if weights in ("float16", "int8"):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if weights == "float16":
    converter.target_spec.supported_types = [tf.float16]
  buffers = {runtimes.METADATA_KEY: json.dumps(metadata).encode()}
  if ood:
    buffers[runtimes.OOD_KEY] = ood
  return runtimes.with_tflite_buffers(
      litert_graph.without_redundant_broadcasts(converter.convert()), buffers)


def onnx_model(tflite_path: str, metadata: dict, ood: bytes = b""):
  """The ONNX model of a float32 LiteRT file: input `images`, outputs named as the LiteRT
  signature names them (`probabilities`, ...), a dynamic `batch` dimension, and the metadata
  and the ood model (base64) in `metadata_props`."""
  import onnx
  from tf2onnx import convert
  with warnings.catch_warnings():  # tf2onnx reads the file with TensorFlow's own interpreter
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
    model, _ = convert.from_tflite(tflite_path, opset=ONNX_OPSET)
  with open(tflite_path, "rb") as f:
    names = runtimes.tflite_output_names(f.read())
  _rename_value(model, model.graph.input[0].name, "images")
  for output in list(model.graph.output):
    _rename_value(model, output.name, names[output.name])
  for value in (model.graph.input[0], *model.graph.output):
    value.type.tensor_type.shape.dim[0].dim_param = "batch"
  model.producer_name = "bloodcell_jax.export (tf2onnx from LiteRT)"
  props = {runtimes.METADATA_KEY: json.dumps(metadata)}
  if ood:
    props[runtimes.OOD_KEY] = base64.b64encode(ood).decode()
  onnx.helper.set_model_props(model, props)
  onnx.checker.check_model(model)
  return model


def _rename_value(model, old: str, new: str) -> None:
  for value in list(model.graph.input) + list(model.graph.output):
    if value.name == old:
      value.name = new
  for node in model.graph.node:
    node.input[:] = [new if name == old else name for name in node.input]
    node.output[:] = [new if name == old else name for name in node.output]


def export(exportable: Exportable, export_format: str, out: str,
           tflite_weights: str = "float32") -> dict:
  """Writes `exportable` to `out` (replacing what is there once the new one is complete);
  returns its metadata."""
  if export_format != "tflite" and tflite_weights != "float32":
    raise UserError(f"--tflite_weights={tflite_weights}: only for --format=tflite")
  weights = tflite_weights if export_format == "tflite" else "float32"
  metadata = _full_metadata(exportable, export_format, weights)
  out = os.path.abspath(out)
  try:
    _write_format(exportable, export_format, out, weights, metadata)
  except Exception as e:  # pylint: disable=broad-except  (TensorFlow's own error types)
    if errors.is_disk_full(e):
      raise UserError(f"--out={out}: no space left on the device "
                      f"({errors.innermost_line(e)}); nothing was replaced") from None
    raise
  return metadata


# Scratch folders beside --out are named after their process, so that one left by a killed
# export (SIGKILL, or SIGTERM during a conversion) is removed by the next export there.
_SCRATCH_PREFIX = ".bloodcell-export-"


def _remove_stale_scratch(directory: str) -> None:
  for name in os.listdir(directory):
    pid = name[len(_SCRATCH_PREFIX):].split("-")[0]
    left = name.startswith(_SCRATCH_PREFIX) and pid.isdigit()
    if left and not workdir_lib.process_alive(int(pid)):
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _write_format(exportable: Exportable, export_format: str, out: str, weights: str,
                  metadata: dict) -> None:
  _remove_stale_scratch(os.path.dirname(out))
  with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-",
                                   dir=os.path.dirname(out)) as scratch:
    saved_model = os.path.join(scratch, "saved_model")
    write_saved_model(exportable, saved_model, metadata,
                      for_conversion=export_format != "saved_model")
    if export_format == "saved_model":
      written = saved_model
    else:
      written = os.path.join(scratch, "model.tflite")
      with open(written, "wb") as f:
        f.write(tflite_model(saved_model, weights, metadata, exportable.ood))
      if export_format == "onnx":
        import onnx
        model = onnx_model(written, metadata, exportable.ood)
        written = os.path.join(scratch, "model.onnx")
        onnx.save(model, written)
    _replace(written, out)


# What a SavedModel directory holds: replaced when one is exported over another, while anything
# else a user keeps beside them (notes, other versions) stays.
_SAVED_MODEL_ENTRIES = ("saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra")


def _replace(new: str, out: str) -> None:
  if not os.path.isdir(out):
    os.replace(new, out)
    return
  old = tempfile.mkdtemp(prefix=".replaced-", dir=os.path.dirname(out))
  try:
    for entry in _SAVED_MODEL_ENTRIES:
      if os.path.lexists(os.path.join(out, entry)):
        os.replace(os.path.join(out, entry), os.path.join(old, entry))
    for entry in os.listdir(new):
      os.replace(os.path.join(new, entry), os.path.join(out, entry))
  except OSError as e:
    raise UserError(f"--out={out}: could not replace the SavedModel's files ({e.strerror}); "
                    f"the previous ones are in {old}") from e
  shutil.rmtree(old, ignore_errors=True)


def check_equal_to_jax(exportable: Exportable, path: str, tolerance) -> float:
  """Largest difference of the exported outputs from the JAX model's on generated cells at
  batch sizes 1 and 7, relative to each output's largest magnitude where that is over 1 (the
  probabilities' is absolute); an error above `tolerance` (None: reported only)."""
  import jax

  from bloodcell_jax.data import synthetic
  images = synthetic.generate(7, exportable.image_size, seed=1).images
  want = jax.device_get(jax.jit(exportable.outputs)(exportable.variables, images))
  model = runtimes.load(path)
  got = [model.outputs(images[:1]), model.outputs(images)]
  if set(got[0]) != set(want):
    raise UserError(f"--out={path}: gives {sorted(got[0])}, not the JAX model's {sorted(want)}")
  difference = max(float(np.abs(g[name] - want[name][:len(g[name])]).max())
                   / max(1.0, float(np.abs(want[name]).max())) for g in got for name in want)
  if tolerance is not None and not difference <= tolerance:
    raise UserError(f"--out={path}: its outputs differ from the JAX model's by "
                    f"{difference:.2e} (more than {tolerance:g}); the file is kept for "
                    "inspection, do not deploy it")
  return difference
