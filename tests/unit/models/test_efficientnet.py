"""EfficientNetV2's variants have keras.applications' parameter counts (the parity with Keras
is tests/e2e/test_efficientnet_parity.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from bloodcell_jax import models


def test_every_variant_has_keras_parameter_count():
  # count_params() of keras.applications.EfficientNetV2*(weights=None), 1000 classes.
  keras_counts = {"b0": 7200312, "b1": 8212124, "b2": 10178374, "b3": 14467622,
                  "s": 21612360, "m": 54431388, "l": 119027848}
  for short, expected in keras_counts.items():
    model = models.get_model(f"efficientnetv2-{short}", num_classes=1000)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0),
                                                   jnp.zeros((1, 32, 32, 3))))
    assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected, short
