"""The study's three stages in one run: frozen backbone -> first 480 Keras layers frozen -> all
layers, each stage starting from the previous stage's best checkpoint (stages run in name
order; each writes its own sub-workdir; override one with --config.stages.s1_transfer.num_epochs=N).
"""

import ml_collections

from configs import effnet, effnet_finetune30, effnet_transfer


def _stage(config, keys=("num_epochs", "optim.freeze", "optim.freeze_keras_layers",
                         "optim.learning_rate", "augment.train")):
  """The keys in which a stage's recipe differs from the staged run's base."""
  stage = ml_collections.ConfigDict()
  for key in keys:
    *parents, leaf = key.split(".")
    node, source = stage, config
    for parent in parents:
      if parent not in node:
        node[parent] = ml_collections.ConfigDict()
      node, source = node[parent], source[parent]
    node[leaf] = source[leaf]
  return stage


def get_config():
  config = effnet.get_config()
  config.stages.s1_transfer = _stage(effnet_transfer.get_config())
  config.stages.s2_finetune30 = _stage(effnet_finetune30.get_config())
  config.stages.s3_full = _stage(effnet.get_config())
  return config
