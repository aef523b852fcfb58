"""Configs and recorded configs as flat `a.b.c` keys: the one flattener of the library."""

from typing import Mapping


def leaves(tree: Mapping, prefix: str = "") -> dict:
  """{"a.b.c": value} of every leaf of a nested mapping (a ConfigDict or a dict)."""
  flat = {}
  for key, value in tree.items():
    if hasattr(value, "items"):
      flat.update(leaves(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def keys(tree: Mapping, prefix: str = "") -> list:
  """Every key of a nested mapping, inner nodes ("data", "data.cleaning") included."""
  found = []
  for key, value in tree.items():
    found.append(f"{prefix}{key}")
    if hasattr(value, "items"):
      found += keys(value, f"{prefix}{key}.")
  return found
