"""The config schema: every recipe passes it, and cross-key rules and stages are checked."""

import glob
import os

import pytest

from bloodcell_jax.config import recipes, schema
from bloodcell_jax.errors import UserError
from helpers import ROOT


def test_every_recipe_passes_the_schema_which_has_a_rule_for_each_of_its_keys():
  for path in sorted(glob.glob(os.path.join(ROOT, "configs", "[!_]*.py"))):
    schema.validate(recipes.load_config_file(path))  # a key without a rule is an error


def test_cross_key_rules_and_stages_are_checked():
  config = recipes.load_config_file(os.path.join(ROOT, "configs", "effnet_staged.py"))
  with config.unlocked():
    config.stages.s3_full.optim.learning_rate = -1.0
  with pytest.raises(UserError, match=r"^config.optim.learning_rate=-1.0: expected a number >= "
                     r"0.0 \(stage s3_full\)$"):
    schema.validate(config)
  config = recipes.load_config_file(os.path.join(ROOT, "configs", "cnn.py"))
  config.train.early_stopping_metric = "ema_val_accuracy"
  with pytest.raises(UserError, match="needs a weight average"):
    schema.validate(config)
  config.train.early_stopping_metric, config.optim.weight_decay = "val_loss", 0.1
  with pytest.raises(UserError, match="decoupled decay needs optim.name=adamw"):
    schema.validate(config)
  config.optim.weight_decay, config.train.max_val_drop, config.data.val_fraction = 0.0, 0.01, 0.0
  with pytest.raises(UserError, match=r"max_val_drop=0.01: needs a validation set"):
    schema.validate(config)


@pytest.mark.parametrize("key, value, message", [
    ("filters", ("abc",), r"^config\.model\.filters=\('abc',\): expected a value like "
                          r"\(32, 64, 128, 256\)$"),
    ("dense_units", -5, r"^config\.model\.dense_units=-5.*: cnn cannot be built at image_size=96 "
                        r"\(TypeError: "),
])
def test_model_arguments_are_checked_before_any_data_is_read(key, value, message):
  config = recipes.load_config_file(os.path.join(ROOT, "configs", "cnn.py"))
  config.model[key] = value
  with pytest.raises(UserError, match=message):
    schema.validate(config)


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n  pass\n", r"line 1: invalid syntax"),
    ("x = 1\n", r"defines no get_config\(\) \(see configs/ for examples\)"),
    ("def get_config():\n  return {}[\"model\"]\n",
     r"get_config\(\) failed: line 2: KeyError: 'model'"),
])
def test_a_config_file_that_does_not_load_is_one_line_with_its_line(tmp_path, source, message):
  path = tmp_path / "recipe.py"
  path.write_text(source)
  with pytest.raises(UserError, match=rf"^--config={path}: {message}"):
    recipes.load_config_file(str(path))
