"""bloodcell_jax: peripheral blood cell classification in JAX/Flax."""

__version__ = "0.1.0"
