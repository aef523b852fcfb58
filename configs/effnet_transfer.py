"""Study stage 1, transfer learning: the ImageNet backbone frozen (BatchNorm in inference mode),
only the new head trains."""

from configs import transfer_common


def get_config():
  return transfer_common.transfer_config("efficientnetv2-s")
