"""The one registry type of the library's extension points."""

import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.registry import Registry


def colours() -> Registry:
  registry = Registry("colour", where="config.colour")
  registry.register("red", 1)
  registry.register("green", 2)
  registry.register("blue", 3)
  return registry


def test_register_get_and_names_in_registration_order():
  registry = colours()
  assert registry.get("green") == 2
  assert registry.names() == ["red", "green", "blue"]
  assert registry.items() == [("red", 1), ("green", 2), ("blue", 3)]
  assert "blue" in registry and "pink" not in registry and len(registry) == 3


def test_an_unknown_name_is_one_line_naming_where_it_came_from_and_the_known_names():
  registry = colours()
  with pytest.raises(UserError) as info:
    registry.get("pink")
  assert str(info.value) == "config.colour='pink': unknown colour (known: red, green, blue)"
  with pytest.raises(UserError) as info:
    registry.get("pink", "--colour")
  assert str(info.value) == "--colour='pink': unknown colour (known: red, green, blue)"
  assert registry.unknown("pink") == str(info.value).replace("--colour", "config.colour")
  assert Registry("shade").unknown("grey") == "'grey': unknown shade (known: none)"


def test_register_as_a_decorator_returns_what_it_decorates():
  registry = Registry("step")

  @registry.register("double")
  def double(x):
    return 2 * x

  assert registry.get("double") is double and double(3) == 6
  assert registry.names() == ["double"]


def test_a_second_registration_replaces_the_first_in_place():
  registry = colours()
  registry.register("red", 10)
  assert registry.get("red") == 10 and registry.names() == ["red", "green", "blue"]


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_must_be_a_non_empty_string(name):
  with pytest.raises(ValueError, match="a colour needs a non-empty name"):
    colours().register(name, 1)
