"""Per-parameter settings as ordered (regex, value) rules over parameter paths.

A path is the parameter's place in the tree, joined by "/": "block2b/expand_conv/kernel".
The first rule whose regex matches the whole path gives the parameter its value. Configs
write rules as a Python list of pairs, e.g. training only the head:

  config.optim.freeze = [("(head_dense|predictions)/.*", "train"), (".*", "freeze")]

A rule may also be one string "regex=value" (split at the last "="), which is how rules are
given on the command line, one quoted string per rule so that commas inside a regex stay:

  --config.optim.freeze="'(head_dense|predictions)/.*=train', '.*=freeze'"

Every parameter must match a rule: a list that leaves one unmatched is an error naming it
(end the list with a catch-all ".*"). An empty list gives every parameter the setting's
default. Freezing, weight decay, the L1/L2 penalty and learning-rate multipliers all use this.
"""

import re
from typing import Any, Callable, List, Sequence, Tuple

from bloodcell_jax.errors import UserError

Rule = Tuple[re.Pattern, Any]


def choice(*allowed: str) -> Callable[[Any], Any]:
  """A value converter accepting exactly one of `allowed`."""
  def convert(value):
    if value not in allowed:
      raise ValueError(f"expected one of {', '.join(allowed)}")
    return value
  return convert


def multiplier(value) -> float:
  """A value converter for non-negative numbers (weight-decay, penalty and rate factors)."""
  number = float(value)
  if not number >= 0:
    raise ValueError("expected a number >= 0")
  return number


def parse(rules: Sequence, where: str, convert: Callable[[Any], Any]) -> List[Rule]:
  """Compiled rules from pairs or "regex=value" strings; errors name `where` and the rule."""
  if isinstance(rules, str):
    raise UserError(f"{where}={rules!r}: expected a list of (regex, value) rules, e.g. "
                    f"[('head/.*', ...), ('.*', ...)]; on the command line one quoted "
                    f"\"'regex=value'\" string per rule")
  parsed = []
  for rule in rules:
    if isinstance(rule, str):
      pattern, sep, value = rule.rpartition("=")
      if not sep:
        raise UserError(f"{where}: rule {rule!r} should be 'regex=value'")
    elif isinstance(rule, (tuple, list)) and len(rule) == 2:
      pattern, value = rule
    else:
      raise UserError(f"{where}: rule {rule!r} should be a (regex, value) pair")
    try:
      value = convert(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError) as e:
      raise UserError(f"{where}: rule {rule!r}: {e}") from None
    try:
      parsed.append((re.compile(str(pattern).strip()), value))
    except re.error as e:
      raise UserError(f"{where}: rule {rule!r}: bad regex ({e})") from None
  return parsed


def resolve(params, rules: Sequence[Rule], where: str, default=None):
  """A tree like `params` holding each parameter's value: its first matching rule's, or
  `default` for every parameter when there are no rules."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top  (config checks need no JAX)
  flat = traverse_util.flatten_dict(params, sep="/")
  values = {}
  for path in flat:
    values[path] = next((value for regex, value in rules if regex.fullmatch(path)), _UNMATCHED)
  unmatched = [path for path, value in values.items() if value is _UNMATCHED]
  if rules and unmatched:
    more = f" (and {len(unmatched) - 1} more)" if len(unmatched) > 1 else ""
    raise UserError(f"{where}: no rule matches parameter '{unmatched[0]}'{more}; end the "
                    "list with a catch-all rule ('.*', value)")
  if not rules:
    values = dict.fromkeys(flat, default)
  return traverse_util.unflatten_dict(values, sep="/")


_UNMATCHED = object()
