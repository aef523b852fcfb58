"""`python -m bloodcell_jax.sweep`: the program is bloodcell_jax/cli/sweep.py."""

from bloodcell_jax.cli import sweep

sweep.run()
