"""Building blocks of sweep files (configs/sweeps/): plain Python lists of override dicts.

A sweep file has `get_config()`, the base config, and `get_sweep()`, the runs: a dict
{run name: {config key: value}} (or a list of override dicts, named by `named`).

  product(sweep("optim.name", ["adam", "lion"]), sweep("loss.l2", [1e-3, 1e-4]))
      -> 4 override dicts, every combination
  zipit(sweep("optim.name", ["adam", "lion"]), sweep("optim.learning_rate", [1e-3, 1e-4]))
      -> 2 override dicts, the values side by side
  with_seeds({"baseline": {}, "lion": {...}}, 3)
      -> baseline.seed0, baseline.seed1, ..., lion.seed2

Runs named `<group>.seed<k>` form one row group of the results table. The key
"recipe" names another config file to start a run from instead of `get_config()`
(the rows of the study's Table 1 are different recipes).
"""

import itertools
import re
from typing import Dict, Iterable, List, Union

from bloodcell_jax.errors import UserError

Overrides = Dict[str, object]
RECIPE_KEY = "recipe"
_SEED_SUFFIX = re.compile(r"\.seed(\d+)$")


def sweep(key: str, values: Iterable) -> List[Overrides]:
  """One override dict per value of `key`."""
  return [{key: value} for value in values]


def seeds(count_or_values: Union[int, Iterable[int]]) -> List[Overrides]:
  values = range(count_or_values) if isinstance(count_or_values, int) else count_or_values
  return sweep("seed", values)


def product(*axes: List[Overrides]) -> List[Overrides]:
  """Every combination of one dict from each axis, merged (later axes win)."""
  return [_merged(combination) for combination in itertools.product(*axes)]


def zipit(*axes: List[Overrides]) -> List[Overrides]:
  """The i-th dicts of all axes merged, for every i; the axes must be equally long."""
  lengths = {len(axis) for axis in axes}
  if len(lengths) > 1:
    raise UserError(f"zipit: axes of different lengths {sorted(lengths)}")
  return [_merged(combination) for combination in zip(*axes)]


def _merged(dicts) -> Overrides:
  merged = {}
  for d in dicts:
    merged.update(d)
  return merged


def named(runs: List[Overrides]) -> Dict[str, Overrides]:
  """Names each override dict by its values: `name=value,...` with each key's last part."""
  named_runs = {}
  for overrides in runs:
    name = ",".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}"
                    for key, value in overrides.items()) or "base"
    if name in named_runs:
      raise UserError(f"two runs named {name!r}: give the sweep's runs names of their own")
    named_runs[name] = overrides
  return named_runs


def _short(value) -> str:
  text = f"{value:g}" if isinstance(value, float) else str(value)
  return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:40]


def with_seeds(runs: Dict[str, Overrides], count_or_values) -> Dict[str, Overrides]:
  """Each run once per seed, named `<name>.seed<k>`."""
  return {f"{name}.seed{s['seed']}": {**overrides, **s}
          for name, overrides in runs.items() for s in seeds(count_or_values)}


def group_of(name: str) -> str:
  """The row group of a run: its name without a `.seed<k>` suffix."""
  return _SEED_SUFFIX.sub("", name)


def reseeded(runs: Dict[str, Overrides], count: int) -> Dict[str, Overrides]:
  """The sweep's run groups, each with seeds 0..count-1 instead of its own."""
  groups = {}
  for name, overrides in runs.items():
    groups.setdefault(group_of(name), {k: v for k, v in overrides.items() if k != "seed"})
  return with_seeds(groups, count)
