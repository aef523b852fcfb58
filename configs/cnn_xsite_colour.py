"""configs/cnn_xsite.py with colour relative to the nucleus instead of grey stain density: the
colour half of configs/sweeps/xsite_pair.py (docs/other-labs.md).

config.model.input_norm="relative_density": each channel's optical density divided by the
nucleus's in that channel, so the nucleus is the same grey in every lab and what absorbs
differently from it (granules, red cells, the blue cytoplasm of young cells) keeps its colour.
That colour is what PBC's platelets, erythroblasts and immature granulocytes differ by, and it
differs between labs' stains too: alone, this run is accurate on PBC and weak on other labs;
beside the grey run the two make up for each other.
20 epochs at 64x64, about 32 minutes on one of 2 CPU cores. Measured on pbc96 (seed 0,
2026-12-06): PBC validation 97.5%; zero-shot LISC 36.5% / 52.8%, Bio-Net 7.4% / 69.5%
(8-class / restricted: other labs' white cells read as erythroblasts).
"""

from configs import cnn_xsite


def get_config():
  config = cnn_xsite.get_config()
  config.model.input_norm = "relative_density"
  return config
