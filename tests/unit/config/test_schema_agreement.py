"""configs/default.py and the config schema agree: every default key has a rule, every rule a
default key, and the choices that are extension points are the names of their registries."""

import pytest

from bloodcell_jax.config import flat, schema
from bloodcell_jax.evaluation import tta
from bloodcell_jax.registry import Registry
from bloodcell_jax.training import optim
from configs import default


def _schema_keys(keys) -> set:
  """The keys the schema rules on: not stages (overlays of the other keys), nor the model's
  constructor arguments (model.* but model.name), which building the model checks, nor the
  evaluators' entries (evals.*), which building the evaluators checks."""
  return {k for k in keys if k != "stages" and not k.startswith(("stages.", "evals."))
          and (k == "model.name" or not k.startswith("model."))}


def disagreements(config, rules) -> list:
  """One line per key that only `config` or only `rules` has."""
  defaults, ruled = _schema_keys(flat.leaves(config)), _schema_keys(rules)
  return ([f"{key}: in configs/default.py, without a rule in schema.RULES"
           for key in sorted(defaults - ruled)]
          + [f"{key}: a rule in schema.RULES, not a key of configs/default.py"
             for key in sorted(ruled - defaults)])


def test_every_default_key_has_a_rule_and_every_rule_a_default_key():
  found = disagreements(default.get_config(), schema.RULES)
  assert not found, "\n".join(found)


def test_a_key_added_to_the_defaults_alone_is_named():
  config = default.get_config()
  config.optim.new_knob = 0.5
  config.model.new_argument = 1  # the model's: checked by building it, not by the schema
  assert disagreements(config, schema.RULES) == [
      "optim.new_knob: in configs/default.py, without a rule in schema.RULES"]
  rules = dict(schema.RULES, **{"eval.gone": schema.flag})
  assert disagreements(default.get_config(), rules) == [
      "eval.gone: a rule in schema.RULES, not a key of configs/default.py"]


REGISTRY_CHOICES = [
    ("optim.name", optim, "OPTIMIZERS", ()),
    ("optim.schedule", optim, "SCHEDULES", ()),
    ("eval.tta", tta, "VIEWS", ("",)),
]


@pytest.mark.parametrize("key, module, registry, also", REGISTRY_CHOICES)
def test_registry_choices_are_the_registry_names(key, module, registry, also):
  names = getattr(module, registry).names()
  assert names
  for name in list(also) + names:
    assert schema.RULES[key](name) is None, (key, name)
  expected = schema.RULES[key]("nope")
  assert expected == schema.one_of(*also, *names)("nope")
  assert all(name in expected for name in names), expected


@pytest.mark.parametrize("key, module, registry, also", REGISTRY_CHOICES)
def test_a_name_registered_later_is_a_valid_choice(key, module, registry, also,
                                                   monkeypatch):
  del also
  extended = Registry("extended")
  for name, entry in getattr(module, registry).items():
    extended.register(name, entry)
  extended.register("added_later", object())
  assert schema.RULES[key]("added_later") is not None
  monkeypatch.setattr(module, registry, extended)
  assert schema.RULES[key]("added_later") is None
