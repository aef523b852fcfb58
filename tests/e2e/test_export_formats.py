"""Exports of the larger models: EfficientNetV2-B0 in every format (minutes of conversion; the
CNN's are tests/unit/export/), and a small ConvNeXt traced with standard ops through LiteRT."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from bloodcell_jax.data import image_set
from bloodcell_jax.export import runtimes
from bloodcell_jax.export import writer as export
from bloodcell_jax.models import convnext, portable
from helpers import exporting
from helpers.images import sixteen_cells

pytestmark = pytest.mark.e2e

SIZE = exporting.SIZE


@pytest.fixture(scope="module", params=["efficientnetv2-b0"])
def exportable(request):
  return exporting.exportable(request.param)


@pytest.fixture(scope="module")
def converted(exportable, tmp_path_factory):
  """{(format, weights): path} of `exportable` (exporting.convert)."""
  return exporting.convert(exportable, tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("export_format,weights,tolerance", exporting.FORMATS)
def test_every_format_gives_the_jax_probabilities_at_any_batch_size(exportable, converted,
                                                                     export_format, weights,
                                                                     tolerance):
  exporting.assert_gives_the_jax_probabilities(exportable, converted[export_format, weights],
                                               export_format, tolerance)


def primitives(jaxpr):
  """(primitive name, operand ranks) of every equation, nested jaxprs included."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name, tuple(getattr(v.aval, "ndim", 0) for v in eqn.invars)
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(inner, "jaxpr", inner)
        if hasattr(inner, "eqns"):
          yield from primitives(inner)


def test_convnext_traced_with_standard_ops_is_the_same_function_and_exports_to_litert(
    tmp_path, monkeypatch):
  """ConvNeXt's Dense layers on feature maps, exact GELU and 7x7 depthwise convolutions, in
  the forms LiteRT's converter reads, give the probabilities of the model as trained (the CNN
  and B0 cover the other formats)."""
  images = sixteen_cells(SIZE)
  tiny = dataclasses.replace(convnext.VARIANTS["convnext-tiny"], depths=(1, 1, 2, 1),
                             widths=(8, 16, 24, 32))
  monkeypatch.setitem(convnext.VARIANTS, "convnext-test", tiny)
  model = convnext.ConvNeXt(variant="convnext-test", num_classes=8)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), images[:1].astype(np.float32))
  variables = exporting.with_logit_scale(model, variables, "predictions",
                                         images.astype(np.float32))
  apply = functools.partial(model.apply, train=False)
  with portable.standard_ops():
    used = set(primitives(jax.make_jaxpr(apply)(variables, images.astype(np.float32)).jaxpr))
  names = {name for name, _ in used}
  assert "conv_general_dilated" in names
  assert not names & {"erf", "erfc", "gather", "platform_index"}
  assert all(max(ranks) <= 2 for name, ranks in used if name == "dot_general")

  exportable = export.Exportable(export.output_function(model), variables, SIZE,
                                 {"class_names": list(image_set.PBC_CLASS_NAMES),
                                  "image_size": SIZE, "model": "convnext-tiny"})
  export.export(exportable, "tflite", str(tmp_path / "convnext.tflite"))
  want = np.asarray(jax.jit(exportable.outputs)(variables, images)["probabilities"])
  got = runtimes.load(str(tmp_path / "convnext.tflite")).predict(images, 7)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
