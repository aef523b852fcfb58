"""Registries: the library's extension points (models, augmentation ops, magnitude ops, shifts,
optimizers, schedules, TTA views, data sources, evaluators) share this one type.

  OPTIMIZERS = Registry("optimizer", where="config.optim.name")

  @OPTIMIZERS.register("adam")
  def adam(config): ...

  OPTIMIZERS.get("adam")   # or a UserError: config.optim.name='adm': unknown optimizer (known: ...)
  OPTIMIZERS.names()       # in registration order
"""

from typing import Any, Callable, Dict, List, Optional

from bloodcell_jax.errors import UserError


class Registry:
  """Named entries of one kind; `get` of an unknown name is a one-line UserError that names
  where the name came from and the known names."""

  def __init__(self, kind: str, where: str = ""):
    self.kind, self.where = kind, where
    self._entries: Dict[str, Any] = {}

  def register(self, name: str, value: Any = None) -> Callable:
    """Registers `value` under `name`; without a value, a decorator that registers what it
    decorates (and returns it unchanged). A second registration of a name replaces the first,
    so a module reloaded in a notebook re-registers cleanly."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
    if value is not None:
      self._entries[name] = value
      return value

    def decorator(entry):
      self._entries[name] = entry
      return entry
    return decorator

  def get(self, name: str, where: Optional[str] = None) -> Any:
    if name not in self._entries:
      raise UserError(self.unknown(name, where))
    return self._entries[name]

  def unknown(self, name, where: Optional[str] = None) -> str:
    """The one line `get` raises for a name that is not registered."""
    where = where or self.where
    prefix = f"{where}='{name}': " if where else f"'{name}': "
    return f"{prefix}unknown {self.kind} (known: {', '.join(self._entries) or 'none'})"

  def names(self) -> List[str]:
    return list(self._entries)

  def items(self):
    return list(self._entries.items())

  def __contains__(self, name) -> bool:
    return name in self._entries

  def __len__(self) -> int:
    return len(self._entries)
