"""Study stage 1, transfer learning: the ImageNet backbone frozen (BatchNorm in inference mode),
only the new head trains."""

from configs import effnet_common, transfer_common


def get_config():
  config = effnet_common.get_config()
  config.optim.freeze = transfer_common.HEAD_ONLY
  config.optim.learning_rate = 1e-3
  return config
