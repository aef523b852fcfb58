"""The names of what a run leaves in its workdir (and a sweep in its directory): one place, so
that every program that reads a run agrees with the code that writes it."""

CONFIG = "config.json"  # the resolved config, as trained
SPLIT_MANIFEST = "split_manifest.json"  # the ids of each split
RESULTS = "results.json"  # final metrics and what the run was; written last
CALIBRATION = "calibration.json"  # fitted temperatures (`predict --calibrated`)
FAILURE = "failure.json"  # a failed sweep run's one-line error
METRICS = "metrics.jsonl"  # the scalars of every logged step and epoch
PREDICTIONS_DIR = "predictions"  # every evaluated image's probabilities, one CSV per set
CHECKPOINTS_DIR = "checkpoints"  # latest/ and best/
WORST_ERRORS = "worst_val_errors.npz"
AUGMENTATION_PREVIEW = "augmentation_preview.png"
REPORT = "report.html"
TRAINING_CURVES = "training_curves.png"
ROBUSTNESS = "robustness.json"
LOCK = ".lock"
# A sweep's directory.
SWEEP_RECORD = "sweep.json"
SWEEP_CHART = "sweep_chart.png"
RUN_LOG = "train.log"
