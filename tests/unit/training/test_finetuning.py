"""The study's staged fine-tuning recipe (freezing in a train step and staged runs are in
tests/e2e/test_frozen_train_step.py and tests/e2e/test_finetuning_runs.py)."""

from configs import effnet_staged


def test_effnet_staged_recipe_is_the_study_sequence():
  config = effnet_staged.get_config()
  assert sorted(config.stages) == ["s1_transfer", "s2_finetune30", "s3_full"]
  transfer, finetune, full = (config.stages[n] for n in sorted(config.stages))
  assert transfer.optim.freeze[-1] == (".*", "freeze") and not transfer.optim.freeze_keras_layers
  assert not finetune.optim.freeze and finetune.optim.freeze_keras_layers == 480
  assert not full.optim.freeze and full.optim.freeze_keras_layers == 0
  assert "brightness" in full.augment.train and "brightness" not in transfer.augment.train
