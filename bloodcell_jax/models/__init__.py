"""Models chosen by name (`config.model.name`): the registry and the families that ship with
the library, which register themselves when this package is imported."""

from bloodcell_jax.models import cnn, convnext, efficientnet_v2, mobilenet_v3
from bloodcell_jax.models.registry import (
                                           MODELS,
                                           KerasPort,
                                           ModelSpec,
                                           build_model,
                                           check_buildable,
                                           get_model,
                                           get_spec,
                                           keras_ported_names,
                                           model_names,
                                           register,
)

__all__ = ["MODELS", "KerasPort", "ModelSpec", "build_model", "check_buildable", "get_model",
           "get_spec",
           "keras_ported_names", "model_names", "register", "cnn", "convnext", "efficientnet_v2",
           "mobilenet_v3"]
