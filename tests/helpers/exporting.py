"""Exportable models with known probabilities, their files in every format, and the check that
a file gives the JAX model's probabilities (tests/unit/export/ and
tests/e2e/test_export_formats.py)."""

import functools

import jax
import numpy as np
import onnx
import pytest

from bloodcell_jax import models
from bloodcell_jax.data import image_set
from bloodcell_jax.data.cleaning import settings
from bloodcell_jax.evaluation import ood
from bloodcell_jax.export import runtimes
from bloodcell_jax.export import writer as export
from bloodcell_jax.training import steps
from helpers.images import sixteen_cells

SIZE = 32
FORMATS = (("saved_model", "float32", 1e-5), ("onnx", "float32", 1e-5),
           ("tflite", "float32", 1e-5), ("tflite", "float16", 1e-3))


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


def exportable(name: str, with_ood: bool = False, **model_args) -> export.Exportable:
  """The model `name` (8 classes, SIZE pixels, built with `model_args`) with host-drawn
  variables, scaled logits and a run's metadata; `with_ood`: also its logits and features,
  and an out-of-distribution model fitted on them for sixteen cells."""
  model = models.get_model(name, num_classes=8, **model_args)
  layer = models.get_spec(name).head[-1]
  cells = sixteen_cells(SIZE)
  variables = with_logit_scale(model, host_variables(model), layer, cells.astype(np.float32))
  metadata = {"class_names": list(image_set.PBC_CLASS_NAMES), "image_size": SIZE,
              "model": name, "val_accuracy": 0.5}
  outputs = export.output_function(model, layer=layer if with_ood else "")
  if not with_ood:
    return export.Exportable(outputs, variables, SIZE, metadata)
  # Scales fitted on the training cells themselves would have no spread (every distance the
  # same), and any rounding difference between runtimes would be amplified 1e12-fold: the
  # cells turned upside down stand for validation images.
  found, flipped = (jax.jit(outputs)(variables, c) for c in (cells, cells[:, ::-1]))
  fitted = ood.fit(found["features"], np.arange(16) % 8, flipped["logits"], flipped["features"],
                   cells, num_classes=8, temperature=1.0, confidence="msp",
                   feature="mahalanobis", pass_fraction=0.9, k=3,
                   cleaning_settings=settings.CleaningSettings())
  return export.Exportable(outputs, variables, SIZE, metadata,
                           ood.to_bytes(ood.for_export(fitted)))


def convert(exportable, directory) -> dict:
  """{(format, weights): path} of `exportable` under `directory`, LiteRT and ONNX converted from
  one SavedModel traced for conversion (as bloodcell_jax.export does for each)."""
  metadata = {**exportable.metadata, "format": "tflite"}
  saved_model = str(directory / "for_conversion")
  export.write_saved_model(exportable, saved_model, metadata, for_conversion=True)
  paths = {}
  for weights in ("float32", "float16"):
    paths["tflite", weights] = str(directory / f"{weights}.tflite")
    with open(paths["tflite", weights], "wb") as f:
      f.write(export.tflite_model(saved_model, weights, {**metadata, "tflite_weights": weights},
                                  exportable.ood))
  paths["onnx", "float32"] = str(directory / "model.onnx")
  onnx.save(export.onnx_model(paths["tflite", "float32"], {**metadata, "format": "onnx"},
                              exportable.ood),
            paths["onnx", "float32"])
  paths["saved_model", "float32"] = str(directory / "saved_model")
  export.export(exportable, "saved_model", paths["saved_model", "float32"])
  return paths


def assert_gives_the_jax_probabilities(exportable, path, export_format, tolerance):
  """The file at `path` gives `exportable`'s outputs at batch sizes 1 and 7 (probabilities
  within `tolerance`, logits and features within it relative to their largest magnitude),
  scores them with its ood model as the run's would, carries its metadata, and refuses images
  of another dtype."""
  images = sixteen_cells(SIZE)
  want = jax.device_get(jax.jit(exportable.outputs)(exportable.variables, images))
  # Confident, unsaturated outputs: a wrong export could not pass by chance.
  probabilities = want["probabilities"]
  assert probabilities.max() > 0.6 and np.median(probabilities.max(axis=1)) < 0.999
  model = runtimes.load(path)
  for batch_size in (1, 7):  # one file, a dynamic batch dimension
    got = model.outputs(images, batch_size)
    assert set(got) == set(want)
    for name, value in want.items():
      scale = 1.0 if name == "probabilities" else max(1.0, float(np.abs(value).max()))
      np.testing.assert_allclose(got[name], value, rtol=0, atol=tolerance * scale, err_msg=name)
  assert (model.ood is None) == (not exportable.ood)
  if exportable.ood:
    scored = model.ood.scores(got["logits"], got["features"], images)
    expected = ood.from_bytes(exportable.ood).scores(want["logits"], want["features"], images)
    np.testing.assert_allclose(scored["ood_score"], expected["ood_score"], rtol=100 * tolerance)
  assert model.metadata["class_names"] == list(image_set.PBC_CLASS_NAMES)
  assert (model.metadata["image_size"], model.metadata["model"], model.metadata["format"]) == (
      SIZE, exportable.metadata["model"], export_format)
  with pytest.raises(Exception, match=r"expected uint8 images \[N, 32, 32, 3\]"):
    model.predict(images.astype(np.float32))
