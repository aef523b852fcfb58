"""Per-parameter decisions by regex over parameter paths ("a/b/kernel"), first match wins.

Rules are written `pattern=value, pattern=value`; e.g. freezing everything but
the head: `dense/.*=train, logits/.*=train, .*=freeze`. A parameter that no rule
matches gets the default.
"""

import re
from typing import List, Tuple

from flax import traverse_util

from bloodcell_jax.errors import UserError


def parse_rules(text: str, allowed, where: str) -> List[Tuple[re.Pattern, str]]:
  rules = []
  for item in filter(None, (part.strip() for part in text.split(","))):
    pattern, sep, value = item.rpartition("=")
    if not sep or value.strip() not in allowed:
      raise UserError(f"{where}: rule '{item}' should be PATTERN=VALUE with VALUE in "
                      f"{', '.join(allowed)}")
    try:
      rules.append((re.compile(pattern.strip()), value.strip()))
    except re.error as e:
      raise UserError(f"{where}: bad regex '{pattern}' ({e})") from None
  return rules


def label_params(params, rules, default: str):
  """A pytree like `params` holding, per leaf, the value of its first matching rule."""
  flat = traverse_util.flatten_dict(params, sep="/")
  labels = {}
  for path in flat:
    labels[path] = next((value for regex, value in rules if regex.fullmatch(path)), default)
  return traverse_util.unflatten_dict(labels, sep="/")


def path_mask(params, pattern: str):
  """True where the parameter path fully matches `pattern`."""
  regex = re.compile(pattern)
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict({p: bool(regex.fullmatch(p)) for p in flat}, sep="/")
