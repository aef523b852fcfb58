"""The model interface: a model defined and registered outside the library (helpers/tiny_model.py)
is checked like the library's own."""

import pytest

from bloodcell_jax.errors import UserError
from helpers.tiny_model import tiny_config


def test_rules_that_leave_a_parameter_unmatched_fail_at_start(tmp_path):
  from bloodcell_jax.trainer import run as train  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = tiny_config()
  config.stages = type(config.stages)()
  config.optim.freeze = [("stem_.*", "freeze")]
  with pytest.raises(UserError, match="^config.optim.freeze: no rule matches parameter "
                     "'block1_bn/bias' \\(and 4 more\\); end the list with a catch-all"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
