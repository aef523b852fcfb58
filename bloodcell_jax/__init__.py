"""bloodcell_jax: peripheral blood cell classification in JAX/Flax.

Importing the package changes nothing outside it; entry points call
`bloodcell_jax.runtime.set_up()` for the process-wide settings.
"""

__version__ = "0.1.0"
