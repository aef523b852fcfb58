"""Defaults shared by every recipe; each file in configs/ starts from `get_config()` here.

Override any key on the command line: `--config.optim.learning_rate=3e-4`.
"""

import ml_collections

from bloodcell_jax import models
from bloodcell_jax.data.image_set import PBC_CLASS_NAMES


def get_config(model: str = "cnn") -> ml_collections.ConfigDict:
  """The defaults, with `model`'s constructor arguments (and their defaults) in config.model."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_epochs = 10
  config.batch_size = 64  # global, over all devices and processes
  # Compute each step's gradient over this many micro-batches in sequence: the update of
  # the whole batch with a fraction of the memory (BatchNorm sees micro-batches).
  config.grad_accum_steps = 1
  config.eval_batch_size = 256
  config.image_size = 96

  config.data = ml_collections.ConfigDict()
  config.data.train = ""  # ImageFolder dir or .npz; empty = embedded synthetic data
  config.data.val = ""  # optional separate validation source; empty = split from train
  config.data.test = ""  # optional test source
  config.data.val_fraction = 0.1
  # The seed of the data itself: the train/val split, the synthetic default's images and the
  # augmented validation draws. Fixed apart from `seed`, so that runs differing only in
  # `seed` are evaluated (and ensembled) on the same images.
  config.data.split_seed = 0
  config.data.class_names = PBC_CLASS_NAMES  # for .npz sources (ImageFolder uses folder names)
  # Read ImageFolders in data.class_names' order too, each holding some of those classes (a
  # run fine-tuned on a lab that labels only some of them keeps all its outputs).
  config.data.folders_use_class_names = False
  config.data.synthetic_size = 2000
  # Clean data.train before the split (duplicates, label conflicts, contamination, copies
  # of data.val / data.test); cached by content. See docs/data-and-cleaning.md.
  config.data.clean = False
  config.data.cleaning = ml_collections.ConfigDict()
  config.data.cleaning.cache_dir = ""  # empty: ~/.cache/bloodcell_jax/cleaning
  config.data.cleaning.keep_file = ""  # a reviewed keep.txt to apply instead of a run
  config.data.cleaning.keep_conflicts = False  # True: one image per label of a conflict
  config.data.cleaning.keep_leaked = False  # True: keep training copies of val/test images
  config.data.cleaning.near_min_similarity = 0.93  # aligned fine-detail correlation
  config.data.cleaning.near_radius = 2.25  # thumbnail distance of near-duplicate candidates
  config.data.cleaning.near_tables = 20  # hash tables of the near-duplicate search
  config.data.cleaning.max_shift = 12  # pixels of translation the pixel check searches
  config.data.cleaning.colour_coverage = 0.99  # the cell colour gamut: share of pixels...
  config.data.cleaning.colour_fit_fraction = 0.8  # ...of the most typically coloured images
  config.data.cleaning.colour_tolerance = 20.0  # grey levels from the gamut that still count
  config.data.cleaning.max_off_colour_fraction = 0.5  # of a 16x16 tile, off the colour gamut
  config.data.cleaning.max_texture_z = 6.5  # robust z of a tile's detail / hard edges
  config.data.cleaning.min_std = 6.0  # luma std below this: blank
  config.data.cleaning.max_written_z = 5.5  # robust z of the words-written-over score
  config.data.cleaning.writing_fit_images = 2000  # images its detector is fitted on; 0: off
  config.data.cleaning.contact_sheets = True
  # Offline augmentation: K augmented copies of each training image, made once and cached
  # in the workdir, by `offline_augment` (empty: the per-image ops of augment.train).
  config.data.offline_copies = 0
  config.data.offline_augment = ""

  # Self-training on a new lab's unlabelled images (configs/adapt_unlabelled.py): the run in
  # config.init.weights labels them, and the confident ones join the training set.
  config.self_training = ml_collections.ConfigDict()
  config.self_training.unlabelled = ""  # a folder or .npz of the new lab's images; "" = off
  config.self_training.classes = ()  # pseudo-labels among these classes only; () = all
  config.self_training.min_confidence = 0.8  # calibrated probability of the chosen class
  config.self_training.class_fraction = 0.5  # per predicted class, its most confident share
  config.self_training.share = 0.3  # of the training set, by repeating the chosen images

  config.augment = ml_collections.ConfigDict()
  # Ops joined by '|' (bloodcell_jax/data/augment.py lists them). The study's basic
  # augmentation: flips, translation, rotation, zoom (Keras factors).
  config.augment.train = "flip|affine(rotate=0.1, translate=0.1, zoom=0.1)"
  # The strong, seeded augmentation behind "augmented validation accuracy".
  config.augment.eval_strong = ("flip|affine(rotate=0.5, translate=0.2, zoom=0.3)"
                                "|random_brightness(0.2)|random_contrast(0.4)")

  # The model's name and constructor arguments, nothing else (bloodcell_jax/models/ lists
  # each family's arguments; input_norm is per-image colour normalisation inside the model).
  config.model = ml_collections.ConfigDict({"name": model,
                                            **models.get_spec(model).defaults})

  # Where the weights come from (config.model holds only the model's constructor arguments).
  config.init = ml_collections.ConfigDict()
  # A Keras .h5, a ported checkpoint (bloodcell_jax.weights.keras_port) or an earlier run's
  # workdir (its best checkpoint). Empty = random initialisation.
  config.init.weights = ""
  config.init.head = "reinit"  # reinit | keep: the classifier head of init.weights
  config.init.frozen_bn_mode = "inference"  # BatchNorm of frozen layers: inference | train

  config.loss = ml_collections.ConfigDict()
  config.loss.class_weights = "balanced"  # balanced | none
  config.loss.label_smoothing = 0.0
  config.loss.l1 = 0.0
  config.loss.l2 = 1e-3  # the study's best: L2 1e-3 on kernels, added to the loss
  # Per-parameter rules (regex, multiplier), first match wins (bloodcell_jax/param_rules.py):
  # which parameters the L1/L2 terms cover, and how much.
  config.loss.regularize = ((r".*kernel", 1.0), (".*", 0.0))
  # AugMix's Jensen-Shannon consistency (the paper: 12; needs an augmix op in augment.train):
  # each batch also carries two AugMix views of every image, tripling the step's work.
  config.loss.jsd_weight = 0.0

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"  # a name of optim.OPTIMIZERS (bloodcell_jax/training/optim.py)
  config.optim.learning_rate = 1e-3
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.momentum = 0.9  # sgd
  config.optim.nesterov = False
  config.optim.weight_decay = 0.0  # decoupled (adamw, lion, sgd)
  config.optim.weight_decay_rules = ((r".*kernel", 1.0), (".*", 0.0))  # (regex, multiplier)
  config.optim.lr_multipliers = ()  # (regex, multiplier) rules; empty: 1 for every parameter
  config.optim.grad_clip_norm = 0.0  # 0 = off
  config.optim.schedule = "constant"  # a name of optim.SCHEDULES (training/optim.py)
  config.optim.warmup_epochs = 1.0
  config.optim.warmup_start_factor = 0.0
  config.optim.end_factor = 0.0
  config.optim.step_decay_epochs = ""  # e.g. "10,20"
  config.optim.step_decay_factor = 0.1
  config.optim.freeze = ()  # (regex, "freeze" | "train") rules, first match wins
  # Also freeze the backbone's Keras layers[:N] (ported models; N<0: all but the last -N).
  config.optim.freeze_keras_layers = 0

  config.train = ml_collections.ConfigDict()
  config.train.early_stopping_metric = "val_accuracy"
  config.train.early_stopping_patience = 5  # epochs without improvement; 0 = off
  config.train.early_stopping_min_delta = 0.0
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 0  # 0 = at each epoch end only
  config.train.keep_checkpoints = 2
  # Also keep an exponential moving average of the weights (e.g. 0.999; 0 = off), evaluated
  # beside the raw weights as ema_val_accuracy, ema_test_accuracy, ...
  config.train.ema_decay = 0.0
  # >= 0: a guard for adapting a trained run (config.init.weights). The starting weights'
  # validation accuracy is measured first; the result is the newest epoch whose accuracy is at
  # most this much lower (0.01: one point), or the starting weights when none is. -1 = off.
  config.train.max_val_drop = -1.0

  config.eval = ml_collections.ConfigDict()
  # Test-time augmentation of the final evaluation: "" (off) or a view set of tta.VIEWS
  # (bloodcell_jax/evaluation/tta.py: "flips", 4 views; "d4", the 8 rotations and
  # reflections); reported beside the plain metrics as val_accuracy_tta,
  # augmented_val_accuracy_tta, test_accuracy_tta.
  config.eval.tta = ""
  config.eval.report = True  # write report.html at the end (bloodcell_jax/results/report.py)

  # What runs on the trained weights (bloodcell_jax/evaluation/evaluators.py lists the types
  # and their options): each entry's metrics go to results.json, the table and the report.
  # `every_epochs=N` also runs an entry every N epochs during training (TensorBoard, JSONL),
  # e.g. config.evals.robustness = dict(type="robustness", every_epochs=2, max_images=500).
  config.evals = ml_collections.ConfigDict()
  config.evals.val = dict(type="classification", set="val")
  # "Augmented validation accuracy": the validation set under augment.eval_strong.
  config.evals.augmented_val = dict(type="classification", set="val", augment="eval_strong")
  config.evals.test = dict(type="classification", set="test")
  config.evals.calibration = dict(type="calibration", set="val")
  # When not to trust a prediction: accuracy on the 80/90/95% of validation the model is
  # surest of (ranked by the feature margin, docs/trust.md), and the out-of-distribution model
  # `predict` flags images with (ood.npz).
  config.evals.selective = dict(type="selective", set="val")
  config.evals.ood = dict(type="ood")

  # Staged fine-tuning: named stages, run in name order, each a set of overrides
  # of this config, each starting from the previous stage's best checkpoint.
  config.stages = ml_collections.ConfigDict()
  return config
