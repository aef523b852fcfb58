"""Class predictions of a trained run's best checkpoint for a folder or an .npz.

  python -m bloodcell_jax.predict --workdir=DIR --input=PATH --output=preds.csv

Writes one row per image: `id` (path relative to the input folder, or the row
index of an .npz), `pred` (class index), `pred_name`, and `p_<class>` for every
class. A folder may hold images directly or in sub-folders (an ImageFolder);
every image under it is predicted.
"""

import csv
import json
import os

import jax
import ml_collections
import numpy as np
import optax
from absl import app, flags

from bloodcell_jax import cli, models, sharding, steps
from bloodcell_jax.data import sources
from bloodcell_jax.errors import UserError
from bloodcell_jax.weights import init_from

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_INPUT = flags.DEFINE_string("input", None, "Image folder or .npz to predict.")
_OUTPUT = flags.DEFINE_string("output", "predictions.csv", "CSV file to write.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per forward pass.")
_EMA = flags.DEFINE_bool("ema", False, "Use the moving average of the weights (a run with "
                         "config.train.ema_decay > 0) instead of the raw weights.")


def load_run(workdir: str, ema: bool = False):
  """(config, class names, model, state) of the best checkpoint in `workdir` (its
  weight average with `ema`)."""
  config_path = os.path.join(workdir, "config.json")
  manifest_path = os.path.join(workdir, "split_manifest.json")
  for path in (config_path, manifest_path):
    if not os.path.isfile(path):
      raise UserError(f"{path}: missing; --workdir must be a training run's directory")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(manifest_path) as f:
    class_names = json.load(f)["class_names"]
  mesh = sharding.make_mesh()
  model = models.build_model(config, len(class_names))
  state, _ = steps.create_train_state(model, lambda p: optax.identity(),
                                      jax.random.PRNGKey(0), config.image_size, mesh)
  variables = init_from.load_variables(workdir, config.model.name, where="--workdir", ema=ema)
  state = jax.device_put(state.replace(params=variables["params"],
                                       batch_stats=variables["batch_stats"]),
                         sharding.replicated(mesh))
  return config, class_names, model, state


def read_unlabelled(path: str, image_size: int):
  """(ids, uint8 images) for every image under a folder, or every row of an .npz."""
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file or directory")
  if os.path.isdir(path):
    ids = sorted(os.path.relpath(os.path.join(d, f), path)
                 for d, _, files in os.walk(path) for f in files
                 if f.lower().endswith(sources.IMAGE_EXTENSIONS) and not f.startswith("."))
    if not ids:
      raise UserError(f"{path}: no {'/'.join(sources.IMAGE_EXTENSIONS)} images found")
    images = np.stack([sources.read_image_file(os.path.join(path, i), image_size)[0]
                       for i in ids])
    return ids, images
  if path.endswith(".npz"):
    data = sources.read_npz(path, image_size, split="test", labelled=False)
    return data.ids.tolist(), data.images
  raise UserError(f"{path}: expected an image folder or an .npz file")


def predict(model, state, images: np.ndarray, batch_size: int) -> np.ndarray:
  """Class probabilities, computed in padded batches on the device mesh."""
  mesh = sharding.make_mesh()
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  forward = steps.jit_predict_step(mesh, model=model)
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size].astype(np.float32)
    valid = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((batch_size - valid,) + chunk.shape[1:],
                                            np.float32)])
    probabilities = forward(state, sharding.global_batch({"image": chunk}, mesh)["image"])
    outputs.append(np.asarray(probabilities)[:valid])
  return np.concatenate(outputs)


def write_csv(path: str, ids, probabilities: np.ndarray, class_names) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "pred", "pred_name"] + [f"p_{c}" for c in class_names])
    for image_id, probs in zip(ids, probabilities):
      pred = int(np.argmax(probs))
      writer.writerow([image_id, pred, class_names[pred]] + [f"{p:.6f}" for p in probs])


def main(argv):
  del argv
  if not _WORKDIR.value or not _INPUT.value:
    raise UserError("--workdir and --input are required")
  config, class_names, model, state = load_run(_WORKDIR.value, _EMA.value)
  ids, images = read_unlabelled(_INPUT.value, config.image_size)
  probabilities = predict(model, state, images, _BATCH_SIZE.value)
  write_csv(_OUTPUT.value, ids, probabilities, class_names)
  print(f"wrote {len(ids)} predictions to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(lambda argv: cli.run_reporting_errors(main, argv))
