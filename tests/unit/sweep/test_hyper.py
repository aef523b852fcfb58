"""The sweep helpers: grids, zipped axes, names and seed groups."""

import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.sweep import hyper


def test_sweep_helpers_build_grids_names_and_seed_groups():
  grid = hyper.product(hyper.sweep("optim.name", ["adam", "lion"]),
                       hyper.sweep("loss.l2", [1e-3, 1e-4]))
  assert grid[1] == {"optim.name": "adam", "loss.l2": 1e-4} and len(grid) == 4
  paired = hyper.zipit(hyper.sweep("optim.name", ["adam", "lion"]),
                       hyper.sweep("optim.learning_rate", [1e-3, 3e-4]))
  assert paired == [{"optim.name": "adam", "optim.learning_rate": 1e-3},
                    {"optim.name": "lion", "optim.learning_rate": 3e-4}]
  with pytest.raises(UserError, match="axes of different lengths"):
    hyper.zipit(hyper.sweep("a", [1, 2]), hyper.sweep("b", [1]))
  assert list(hyper.named(paired)) == ["name=adam,learning_rate=0.001",
                                       "name=lion,learning_rate=0.0003"]
  seeded = hyper.with_seeds({"base": {}, "lion": {"optim.name": "lion"}}, 2)
  assert list(seeded) == ["base.seed0", "base.seed1", "lion.seed0", "lion.seed1"]
  assert seeded["lion.seed1"] == {"optim.name": "lion", "seed": 1}
  assert hyper.group_of("lion.seed1") == "lion"
  assert list(hyper.reseeded(seeded, 3)) == [f"{g}.seed{s}" for g in ("base", "lion")
                                             for s in range(3)]
