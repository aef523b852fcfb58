"""A trained run's model for inference: its best checkpoint loaded, and class probabilities
of image arrays computed on the device mesh (shared by predict, robustness and the tests)."""

import functools
import logging
import os
import threading
from typing import Any, Callable, List, NamedTuple, Optional

import jax
import ml_collections
import numpy as np

from bloodcell_jax import models
from bloodcell_jax.config import recorded
from bloodcell_jax.data import sources
from bloodcell_jax.errors import UserError
from bloodcell_jax.evaluation import executables
from bloodcell_jax.evaluation import tta as tta_lib
from bloodcell_jax.training import checkpoint, run_files, sharding, steps


class OpenedRun(NamedTuple):
  config: ml_collections.ConfigDict
  class_names: List[str]
  model: Any


class LoadedRun(NamedTuple):
  config: ml_collections.ConfigDict
  class_names: List[str]
  model: Any
  state: Any  # a TrainState holding the weights, replicated on the device mesh
  weights: checkpoint.RunWeights  # which checkpoint they came from


def load_run(workdir: str, ema: bool = False) -> LoadedRun:
  """The best checkpoint in `workdir` (its weight average with `ema`; the newest readable one
  when the best is unreadable, and `weights` says so), with the run's config and classes."""
  opened = open_run(workdir)
  return LoadedRun(*opened, *restore_run(workdir, opened, ema))


def open_run(workdir: str) -> OpenedRun:
  """The run's config, class names and model, from its config.json and split manifest."""
  for name in (run_files.CONFIG, run_files.SPLIT_MANIFEST):
    if not os.path.isfile(os.path.join(workdir, name)):
      raise UserError(f"{os.path.join(workdir, name)}: missing; --workdir must be a training "
                      "run's directory")
  recorded_config = run_files.read_json(os.path.join(workdir, run_files.CONFIG))
  config = ml_collections.ConfigDict(recorded.upgrade_recorded(recorded_config))
  manifest_path = os.path.join(workdir, run_files.SPLIT_MANIFEST)
  class_names = run_files.read_json(manifest_path).get("class_names")
  if not (isinstance(class_names, list) and class_names):
    raise run_files.damaged(manifest_path, "no class_names list")
  return OpenedRun(config, class_names, models.build_model(config, len(class_names)))


def restore_run(workdir: str, opened: OpenedRun, ema: bool = False):
  """(state, weights) of `load_run` for a run opened with `open_run`."""
  weights = checkpoint.run_variables(workdir, "--workdir", ema=ema)
  if weights is None:
    raise UserError(f"--workdir={workdir}: no readable checkpoint in {workdir}/checkpoints")
  if weights.skipped:
    logging.warning("--workdir=%s: using the %s", workdir, weights.describe())
  try:
    state = steps.inference_state(opened.model, weights.variables, opened.config.image_size,
                                  sharding.make_mesh())
  except ValueError as e:
    raise UserError(f"--workdir={workdir}: its {weights.describe()} does not fit the model "
                    f"its config.json describes: {e}") from None
  return state, weights


class Unlabelled(NamedTuple):
  ids: List[str]  # paths relative to the folder, or an .npz's row ids
  read: Callable[[], np.ndarray]  # the uint8 images, decoded when called


def open_unlabelled(path: str, image_size: int) -> Unlabelled:
  """Every image under a folder, or every row of an .npz: their ids now, the images when
  `read()` (a folder's are decoded then)."""
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file or directory")
  if os.path.isdir(path):
    ids, _ = sources.image_files(path)
    if not ids:
      raise UserError(f"{path}: no {'/'.join(sources.IMAGE_EXTENSIONS)} images found")

    def read():
      decoded = [sources.read_image_file(os.path.join(path, i), image_size) for i in ids]
      sources.warn_tiny(path, ids, [r.size for r in decoded], image_size)
      return np.stack([r.image for r in decoded])
    return Unlabelled(ids, read)
  if path.endswith(".npz"):
    data = sources.read_npz(path, image_size, split="test", labelled=False)
    return Unlabelled(data.ids.tolist(), lambda: data.images)
  raise UserError(f"{path}: expected an image folder or an .npz file")


def read_unlabelled(path: str, image_size: int):
  """(ids, uint8 images) for every image under a folder, or every row of an .npz."""
  unlabelled = open_unlabelled(path, image_size)
  return unlabelled.ids, unlabelled.read()


def read_labelled(path: str, image_size: int, class_names, where: str):
  """The ImageSet of a labelled ImageFolder or .npz, labelled in the run's class order; a
  folder may hold some of the run's classes only. Errors name `where` (a flag or config key)."""
  if not os.path.exists(path):
    raise UserError(f"{where}={path}: no such file or directory")
  try:
    data = sources.load_source(path, image_size, default_split="test",
                               class_names=tuple(class_names), folder_classes=class_names)
  except UserError as e:
    raise UserError(f"{where}: {e}") from None
  return data


def run_temperature(workdir: str, ema: bool = False) -> float:
  """The temperature fitted on the run's validation set (calibration.json), for the raw
  weights or their moving average."""
  path = os.path.join(workdir, run_files.CALIBRATION)
  key = "ema_temperature" if ema else "temperature"
  record = run_files.read_json(path) or {}
  if key not in record:
    raise UserError(f"--workdir={workdir}: no {key} in {path}; --calibrated needs a run that "
                    "finished with a validation set (rerun its command to re-evaluate it)")
  return float(record[key])


def ood_model(workdir: str, ema: bool = False):
  """The run's out-of-distribution model (ood.npz, or ema_ood.npz for the weight average);
  None for a run that has none (trained before it existed, or without a validation set)."""
  from bloodcell_jax.evaluation import ood  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, ("ema_" if ema else "") + ood.FILE)
  return ood.from_file(path) if os.path.isfile(path) else None


@functools.lru_cache(maxsize=8)
def _forward(model, mesh, tta: str):
  """The jitted forward pass of `model`, built once: the robustness benchmark predicts
  a hundred sets with the same model, and each new jit would compile again."""
  return steps.jit_predict_step(mesh, model=model, views=tta_lib.views_of(tta))


def predict(model, state, images: np.ndarray, batch_size: int, tta: str = "",
            temperature: float = 1.0) -> np.ndarray:
  """Class probabilities, computed in padded batches on the device mesh; with `tta`,
  averaged over its views; each view's logits divided by `temperature`."""
  forward = _forward(model, sharding.make_mesh(), tta)
  return _in_batches(lambda state_, batch: forward(state_, batch, np.float32(temperature)),
                     state, images, batch_size)


def classifier_layer(config) -> str:
  """The top-level module whose input is the model's penultimate features: the last of its
  registered head ("" for a model registered without one)."""
  head = models.get_spec(config.model.name).head
  return head[-1] if head else ""


@functools.lru_cache(maxsize=8)
def _logits_and_features(model, mesh, layer: str):
  return steps.jit_logits_and_features(mesh, model=model, layer=layer)


def logits_and_features(model, state, images: np.ndarray, batch_size: int, layer: str,
                        ahead: Optional["Ahead"] = None):
  """(logits, penultimate features) of every image, the features being the input of the
  top-level module `layer` (classifier_layer); by the step `ahead` compiled, where given."""
  if ahead is not None:
    return run_ahead(ahead, features_step(model, layer), state, images, batch_size)
  return _in_batches(features_step(model, layer), state, images, batch_size)


def features_step(model, layer: str):
  """The jitted step of `logits_and_features`, for `compile_ahead`."""
  return _logits_and_features(model, sharding.make_mesh(), layer)


class Ahead:
  """A step being compiled (or loaded) in a thread: `compiled()` waits for it."""

  def __init__(self, work: Callable[[], Any], saved_as: str):
    self.saved_as = saved_as  # its file name in executables.folder()
    self._result = {}
    self._thread = threading.Thread(target=lambda: self._result.setdefault("step", work()),
                                    daemon=True)
    self._thread.start()

  def compiled(self):
    """The compiled step, or None where compiling failed (the jitted step then reports why)."""
    self._thread.join()
    return self._result.get("step")


def compile_ahead(step, name: str, opened: OpenedRun, count: int, batch_size: int) -> Ahead:
  """Starts compiling `step(state, batch)` (jitted, called `name`) for the opened run's state
  and the batches `_in_batches` will give it for `count` images, in a thread: XLA releases
  Python's lock while it compiles, so this overlaps restoring the checkpoint and reading the
  images. On CPU the executable is kept on disk (executables.py) and loaded from there next
  time, which spares tracing the model and compiling."""
  mesh, size = sharding.make_mesh(), opened.config.image_size
  batch_shape = (_padded_batch_size(batch_size, count), size, size, 3)
  keep = jax.default_backend() == "cpu"
  saved_as = executables.key(name, opened.config.to_dict(), len(opened.class_names),
                             batch_shape, mesh.devices.shape) if keep else ""

  def load_or_compile():
    compiled = executables.load(saved_as) if keep else None
    if compiled is not None:
      return compiled
    try:
      state = steps.inference_state_shapes(opened.model, size, mesh)
      batch = jax.ShapeDtypeStruct(batch_shape, np.float32, sharding=sharding.batch_sharded(mesh))
      lowered = step.lower(state, batch)
      if not keep:
        return lowered.compile()
      compiled, fresh = executables.compile_fresh(lowered)
    except Exception:  # pylint: disable=broad-except
      return None
    if fresh:
      executables.save(saved_as, compiled)
    return compiled

  return Ahead(load_or_compile, saved_as)


def run_ahead(ahead: Ahead, step, state, images: np.ndarray, batch_size: int):
  """`_in_batches` by the step `ahead` compiled, else (none, or a kept executable that fails
  to run: it is removed) by the jitted `step`."""
  compiled = ahead.compiled()
  if compiled is not None:
    try:
      return _in_batches(compiled, state, images, batch_size)
    except (jax.errors.JaxRuntimeError, TypeError, ValueError) as e:
      logging.warning("the compiled forward pass failed (%s); compiling it again", e)
      if ahead.saved_as:
        executables.forget(ahead.saved_as)
  return _in_batches(step, state, images, batch_size)


def _padded_batch_size(batch_size: int, count: int) -> int:
  """The batch size for `count` images: at most `batch_size`, with batches as equal as can be
  (1,000 images at 256 run as 4 batches of 250, not 3 of 256 and one padded from 232), rounded
  up to split evenly over the devices."""
  count = max(1, count)
  batches = -(-count // max(1, batch_size))
  size = -(-count // batches)
  return -(-size // jax.device_count()) * jax.device_count()


def _in_batches(step, state, images: np.ndarray, batch_size: int):
  """`step(state, batch)` over `images` in padded batches split over the device mesh, each
  output (one array, or a tuple) concatenated without the padding."""
  mesh = sharding.make_mesh()
  batch_size = _padded_batch_size(batch_size, len(images))
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size].astype(np.float32)
    valid = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((batch_size - valid,) + chunk.shape[1:],
                                            np.float32)])
    out = step(state, sharding.global_batch({"image": chunk}, mesh)["image"])
    outputs.append(tuple(np.asarray(o)[:valid] for o in
                         (out if isinstance(out, tuple) else (out,))))
  joined = tuple(np.concatenate(parts) for parts in zip(*outputs))
  return joined if len(joined) > 1 else joined[0]
