"""Adapting a trained run to a new lab without labels: self-training on its unlabelled images.

  python launch.py --config=configs/adapt_unlabelled.py:runs/cnn_xsite \
      --workdir=runs/cnn_xsite_lab2 --config.self_training.unlabelled=lab2_images/ \
      [--config.self_training.classes="('eosinophil', 'lymphocyte', 'monocyte', 'neutrophil')"]

The part after ':' is the trained run (its workdir). The run labels the new lab's images with
its calibrated probabilities, and the most confident of each predicted class (at least
self_training.min_confidence, at most the self_training.class_fraction most confident of the
images predicted as it) join the run's own labelled training images, repeated so that they
make up 30% of each epoch. A lab that has no platelets or erythroblasts in its folder (white
cells only) says so with self_training.classes: the labels are chosen among those classes.
Training starts from the run's best checkpoint, with its config, data, split and augmentation,
for 3 epochs at a learning rate 20x below training (as configs/adapt.py).

The guard: the run's own validation images (the same split) are measured before the first
step, and the result is the newest epoch whose validation accuracy is at most one point lower;
when none is, the result is the run's own weights (results.json "guard" says which). The new
lab's images are never used to choose anything. docs/other-labs.md has what it does.
Without a run after ':', it starts from configs/cnn_xsite.py (pass --config.init.weights=RUN
and the run's data settings yourself).
"""

from configs import adapt, cnn_xsite


def get_config(run: str = ""):
  # Without a run: pass --config.init.weights=RUN and the run's --config.data.* yourself.
  config = adapt.starting_from(run, cnn_xsite)
  config.num_epochs = 3
  config.train.max_val_drop = 0.01
  return config
