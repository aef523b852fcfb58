"""keep.txt: the ids a cleaning run keeps, one per line, in the source's order (written by
report.write, perhaps reviewed and edited by hand since). The one reader of it, for training
(config.data.cleaning.keep_file and the cache of a cleaning run) and the TFDS builder.
"""

import numpy as np

from bloodcell_jax.errors import UserError

_EXPECTED = "expected a keep.txt written by python -m bloodcell_jax.data.clean"


def read_ids(path, where: str = "") -> list:
  """The ids listed in the keep file at `path`. A missing or unreadable file is a UserError
  naming `where` the path came from (a config key or flag), if given."""
  named = f"{where}={path}" if where else str(path)
  try:
    with open(path) as f:
      return [line.rstrip("\n") for line in f if line.strip()]
  except FileNotFoundError:
    raise UserError(f"{named}: no such file ({_EXPECTED})") from None
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"{named}: unreadable keep file ({e}; {_EXPECTED})") from None


def kept_mask(data, path, where: str = "") -> np.ndarray:
  """Which images of `data` (an ImageSet) the keep file at `path` lists, as a bool per image;
  an id that `data` lacks is a UserError (the file was made for other data)."""
  kept_ids = read_ids(path, where)
  position = {str(i): k for k, i in enumerate(data.ids)}
  unknown = [i for i in kept_ids if i not in position]
  if unknown:
    named = f"{where}={path}" if where else str(path)
    raise UserError(f"{named}: id {unknown[0]!r} is not in {data.name} ({len(unknown)} unknown "
                    "ids; was the keep file made for this data?)")
  mask = np.zeros(len(data), bool)
  mask[[position[i] for i in kept_ids]] = True
  return mask
