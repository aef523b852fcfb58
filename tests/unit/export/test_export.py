"""Exported models (SavedModel, ONNX, LiteRT) give the JAX model's probabilities and carry their
metadata: the CNN of configs/cnn_xsite.py here (framing and stain density inside the model);
EfficientNetV2-B0 and a small ConvNeXt in tests/e2e/test_export_formats.py, the program on a
trained run in tests/e2e/test_export_cli.py."""

import pytest

from helpers import exporting


@pytest.fixture(scope="module", params=["cnn"])
def exportable(request):
  return exporting.exportable(request.param, framing="nucleus", input_norm="stain_density")


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
