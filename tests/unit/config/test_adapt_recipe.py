"""configs/adapt.py:<run> starts from the run's recorded config and classes."""

import json

from bloodcell_jax.config import recipes
from configs import cnn_xsite


def test_adapt_keeps_the_runs_classes_and_its_freeze_rules_can_be_overridden(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  config = cnn_xsite.get_config()
  config.optim.freeze = ("conv0/.*=freeze", ".*=train")
  (run / "config.json").write_text(config.to_json())  # JSON turns the tuple into a list
  (run / "split_manifest.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
  adapted = recipes.load_config_file(f"configs/adapt.py:{run}")
  assert json.loads(adapted.model.to_json()) == json.loads(config.model.to_json())
  assert list(adapted.data.class_names) == ["a", "b", "c"]
  assert adapted.data.folders_use_class_names and adapted.init.weights == str(run)
  # A tuple: --config.optim.freeze can override it (config_flags refuses to override a list).
  assert adapted.optim.freeze == ("conv0/.*=freeze", ".*=train")
