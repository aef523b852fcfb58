"""Exported models (SavedModel, ONNX, LiteRT) give the JAX model's probabilities, carry their
metadata, and run through `predict --model` like the run they came from."""

import functools
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from bloodcell_jax import config_schema, export, exported, files, models, steps
from bloodcell_jax.data import sources, synthetic
from bloodcell_jax.models import portable
from tests.conftest import PBC96, ROOT, subprocess_env

SIZE = 32
FORMATS = (("saved_model", "float32", 1e-5), ("onnx", "float32", 1e-5),
           ("tflite", "float32", 1e-5), ("tflite", "float16", 1e-3))


def sixteen_cells(size: int) -> np.ndarray:
  """Two real images of each PBC class at `size`; generated cells without the data."""
  if not os.path.isdir(PBC96):
    return synthetic.generate(16, size).images
  images = []
  for name in sources.PBC_CLASS_NAMES:
    folder = os.path.join(PBC96, name)
    for file in sorted(os.listdir(folder))[:2]:
      images.append(sources.read_image_file(os.path.join(folder, file), size)[0])
  return np.stack(images)


def host_variables(model, seed=0):
  """Variables drawn on the host (initialising B0 in JAX compiles for seconds), with
  BatchNorm statistics away from (0, 1) so that inference mode matters."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "var":
      return rng.uniform(0.5, 2.0, leaf.shape).astype(leaf.dtype)
    if name in ("mean", "bias"):
      return (0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
    if name == "scale":
      return rng.uniform(0.8, 1.2, leaf.shape).astype(leaf.dtype)
    fan_in = np.prod(leaf.shape[:-1])
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
  params, batch_stats = jax.tree_util.tree_map_with_path(draw, jax.eval_shape(
      functools.partial(steps.init_variables, model, image_size=SIZE), jax.random.PRNGKey(0)))
  return {"params": params, "batch_stats": batch_stats}


def with_logit_scale(model, variables, head: str, images, scale: float = 3.0):
  """`variables` with the classifier `head` scaled so that the logits' spread is `scale`:
  confident but not saturated probabilities, where an export's error would show."""
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, images)
  factor = scale / float(np.std(logits))
  layer = {k: v * factor for k, v in variables["params"][head].items()}
  return {**variables, "params": {**variables["params"], head: layer}}


@pytest.fixture(scope="module", params=["cnn", "efficientnetv2-b0"])
def exportable(request):
  model = models.get_model(request.param, num_classes=8)
  variables = with_logit_scale(model, host_variables(model),
                               models.get_spec(request.param).head[-1],
                               sixteen_cells(SIZE).astype(np.float32))
  metadata = {"class_names": list(sources.PBC_CLASS_NAMES), "image_size": SIZE,
              "model": request.param, "val_accuracy": 0.5}
  return export.Exportable(export.probability_function(model), variables, SIZE, metadata)


@pytest.mark.parametrize("export_format,weights,tolerance", FORMATS)
def test_every_format_gives_the_jax_probabilities_at_any_batch_size(exportable, export_format,
                                                                     weights, tolerance,
                                                                     tmp_path):
  images = sixteen_cells(SIZE)
  want = np.asarray(jax.jit(exportable.probabilities)(exportable.variables, images))
  # Confident, unsaturated outputs: a wrong export could not pass by chance.
  assert want.max() > 0.6 and np.median(want.max(axis=1)) < 0.999
  out = str(tmp_path / {"saved_model": "model", "onnx": "m.onnx", "tflite": "m.tflite"}[
      export_format])
  export.export(exportable, export_format, out, weights)
  model = exported.load(out)
  for batch_size in (1, 7):  # one file, a dynamic batch dimension
    np.testing.assert_allclose(model.predict(images, batch_size), want, rtol=0, atol=tolerance)
  assert model.metadata["class_names"] == list(sources.PBC_CLASS_NAMES)
  assert (model.metadata["image_size"], model.metadata["model"], model.metadata["format"],
          model.metadata["tflite_weights"]) == (SIZE, exportable.metadata["model"],
                                                export_format, weights)
  with pytest.raises(Exception, match=r"expected uint8 images \[N, 32, 32, 3\]"):
    model.predict(images.astype(np.float32))


def primitives(jaxpr):
  """(primitive name, operand ranks) of every equation, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name, tuple(getattr(v.aval, "ndim", 0) for v in eqn.invars)
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(inner, "jaxpr", inner)
        if hasattr(inner, "eqns"):
          yield from primitives(inner)


def test_standard_ops_are_the_same_function_without_gather_erfc_or_dense_on_feature_maps():
  """ConvNeXt traced for export: depthwise convolutions, Dense layers on feature maps and
  the exact GELU in the forms every runtime converts."""
  images = synthetic.generate(2, SIZE).images.astype(np.float32)
  model = models.get_model("convnext-tiny", num_classes=8)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(0), images)
  apply = functools.partial(model.apply, train=False)
  with portable.standard_ops():
    portable_logits = jax.jit(apply)(variables, images)
    used = set(primitives(jax.make_jaxpr(apply)(variables, images).jaxpr))
  logits = jax.jit(apply)(variables, images)
  np.testing.assert_allclose(portable_logits, logits, rtol=0,
                             atol=1e-5 * float(np.abs(logits).max()))
  names = {name for name, _ in used}
  assert "conv_general_dilated" in names and not names & {"erfc", "gather", "platform_index"}
  assert all(max(ranks) <= 2 for name, ranks in used if name == "dot_general")


def run_module(module, *args):
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, env=subprocess_env(), timeout=600)
  return result.returncode, result.stdout, result.stderr.strip().splitlines()[-1:]


def test_export_cli_and_predict_model_equal_predict_workdir(trained_run, tmp_path):
  workdir, _ = trained_run
  folder = tmp_path / "cells"
  folder.mkdir()
  for i, image in enumerate(sixteen_cells(32)):
    Image.fromarray(image).save(folder / f"{i:02d}.png")
  onnx_file = str(tmp_path / "run.onnx")
  code, stdout, _ = run_module("bloodcell_jax.export", f"--workdir={workdir}", "--format=onnx",
                               f"--out={onnx_file}", "--tta=flips", "--calibrated")
  assert code == 0 and "max |difference| to JAX" in stdout
  model = exported.load(onnx_file)
  results = files.read_json(os.path.join(workdir, "results.json"))
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(config_schema.upgrade_recorded(json.load(f)))
  assert model.metadata["val_accuracy"] == results["val_accuracy"]
  assert model.metadata["config_digest"] == config_schema.config_digest(config)
  assert model.metadata["source_run"] == os.path.abspath(workdir)
  assert (model.metadata["tta"], model.metadata["temperature"]) == (
      "flips", files.read_json(os.path.join(workdir, "calibration.json"))["temperature"])

  by_model, by_run = tmp_path / "model.csv", tmp_path / "run.csv"
  assert run_module("bloodcell_jax.predict", f"--model={onnx_file}", f"--input={folder}",
                    f"--output={by_model}")[0] == 0
  assert run_module("bloodcell_jax.predict", f"--workdir={workdir}", "--tta=flips",
                    "--calibrated", f"--input={folder}", f"--output={by_run}")[0] == 0
  ids, _, got, names = files.read_probabilities(str(by_model))
  want_ids, _, want, want_names = files.read_probabilities(str(by_run))
  assert (ids, names) == (want_ids, want_names) and len(ids) == 16
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # 6 decimals in the CSVs

  assert run_module("bloodcell_jax.predict", f"--model={onnx_file}", "--tta=d4",
                    f"--input={folder}")[2] == [
      "error: --tta: for --workdir runs; an exported model has its weights, TTA and "
      "calibration chosen at export"]
  assert run_module("bloodcell_jax.export", f"--workdir={workdir}", "--format=tflite",
                    f"--out={tmp_path / 'run.onnx'}")[2] == [
      f"error: --out={tmp_path / 'run.onnx'}: a --format=tflite file must end in .tflite"]
