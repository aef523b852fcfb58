"""Two custom CNNs for other labs' slides, one on grey stain density and one on colour relative
to the nucleus, to be averaged (docs/other-labs.md): each makes up for the other's errors.

  python -m bloodcell_jax.sweep --config=configs/sweeps/xsite_pair.py --workdir=runs/xsite \\
      --config.data.train=../shared/data/pbc96 [--parallel=2]
  bloodcell-predict --workdir=runs/xsite/grey --workdir=runs/xsite/colour --input=LAB_IMAGES \\
      --output=preds.csv [--classes=basophil,eosinophil,lymphocyte,monocyte,neutrophil]

Measured 2026-12-06 on 2 CPU cores, seed 0, trained on pbc96 alone: the average of the two
reaches 97.4% on PBC validation (balanced 97.6%) and, zero-shot and restricted to each lab's
classes, 65.2% on LISC and 69.5% on Bio-Net. With --parallel=2 (one core each) the sweep took
32.4 minutes from start to report.
"""

from configs import cnn_xsite


def get_config():
  return cnn_xsite.get_config()


def get_sweep():
  return {"grey": {}, "colour": {"recipe": "configs/cnn_xsite_colour.py"}}
