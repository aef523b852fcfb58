"""`python -m bloodcell_jax.export`: the program is bloodcell_jax/cli/export.py."""

from bloodcell_jax.cli import export

export.run()
