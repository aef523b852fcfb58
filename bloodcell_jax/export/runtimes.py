"""Exported models (bloodcell_jax/export/writer.py) run by their own runtimes: TensorFlow for a
SavedModel, ONNX Runtime for .onnx, LiteRT for .tflite. Imports no JAX.

  model = runtimes.load("cnn.onnx")
  model.metadata["class_names"], model.predict(uint8_images)  # (N, classes) probabilities
  model.ood  # the run's out-of-distribution model (ood.OodModel), None if it had none
"""

import base64
import json
import os

import numpy as np

from bloodcell_jax import errors
from bloodcell_jax.errors import UserError

METADATA_FILE = "metadata.json"  # SavedModel asset
METADATA_KEY = "bloodcell_jax"  # ONNX metadata_props key, LiteRT metadata buffer name
OOD_FILE = "ood.npz"  # SavedModel asset
OOD_KEY = "bloodcell_jax_ood"  # ONNX metadata_props key (base64), LiteRT metadata buffer name


class ExportedModel:
  """A loaded exported model: `metadata` (dict), `ood` (ood.OodModel or None) and
  `predict(uint8 images)`."""
  kind = ""

  def __init__(self, path: str):
    self.path = path
    self.metadata = self._read_metadata()
    for key in ("class_names", "image_size"):
      if key not in self.metadata:
        raise UserError(f"--model={path}: its metadata has no {key}; was it written by "
                        "bloodcell_jax.export?")
    self._check_metadata_fits()
    self.ood = self._ood_model()

  def _ood_model(self):
    data = self._read_ood()
    if not data:
      return None
    from bloodcell_jax.evaluation import ood  # pylint: disable=g-import-not-at-top
    try:
      return ood.from_bytes(data)
    except ValueError as e:
      raise UserError(f"--model={self.path}: its out-of-distribution model is damaged ({e})"
                      ) from None

  def _check_metadata_fits(self) -> None:
    """The metadata's image size and class names against the model's own input and output:
    an edited or mismatched file would otherwise give a malformed CSV."""
    names, size = self.metadata["class_names"], self.metadata["image_size"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
      raise UserError(f"--model={self.path}: its metadata's class_names is not a list of names")
    inputs, outputs = self._shapes()
    if not isinstance(size, int) or list(inputs[1:]) not in ([size, size, 3], [None] * 3):
      raise UserError(f"--model={self.path}: its metadata says image_size {size!r}, but the "
                      f"model takes images {list(inputs)}")
    if outputs[-1] not in (len(names), None):
      raise UserError(f"--model={self.path}: its metadata names {len(names)} classes, but the "
                      f"model has {outputs[-1]} outputs")

  def _shapes(self):
    """(input shape, output shape) of the model, None where a dimension is dynamic."""
    raise NotImplementedError

  def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of uint8 images (N, S, S, 3), in batches of `batch_size`."""
    return self.outputs(images, batch_size)["probabilities"]

  def outputs(self, images: np.ndarray, batch_size: int = 64) -> dict:
    """Every output of the model ({name: array}: probabilities, and logits and features
    where it carries an ood model) for uint8 images (N, S, S, 3)."""
    size = self.metadata["image_size"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
      raise UserError(f"--model={self.path}: expected uint8 images [N, {size}, {size}, 3], "
                      f"got {images.dtype} {list(images.shape)}")
    batches = [self._run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}

  def _read_metadata(self) -> dict:
    raise NotImplementedError

  def _read_ood(self) -> bytes:
    raise NotImplementedError

  def _run(self, images: np.ndarray) -> dict:
    raise NotImplementedError


class SavedModel(ExportedModel):
  kind = "saved_model"

  def __init__(self, path):
    import tensorflow as tf
    self._tf = tf
    self._serve = tf.saved_model.load(path).signatures["serving_default"]
    super().__init__(path)

  def _read_metadata(self):
    with open(os.path.join(self.path, "assets", METADATA_FILE)) as f:
      return json.load(f)

  def _read_ood(self):
    path = os.path.join(self.path, "assets", OOD_FILE)
    if not os.path.isfile(path):
      return b""
    with open(path, "rb") as f:
      return f.read()

  def _shapes(self):
    inputs = self._serve.structured_input_signature[1]["images"].shape.as_list()
    return inputs, self._serve.structured_outputs["probabilities"].shape.as_list()

  def _run(self, images):
    return {name: value.numpy()
            for name, value in self._serve(images=self._tf.constant(images)).items()}


class OnnxModel(ExportedModel):
  kind = "onnx"

  def __init__(self, path):
    import onnxruntime
    self._session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    super().__init__(path)

  def _read_metadata(self):
    props = self._session.get_modelmeta().custom_metadata_map
    return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}

  def _read_ood(self):
    props = self._session.get_modelmeta().custom_metadata_map
    return base64.b64decode(props[OOD_KEY]) if OOD_KEY in props else b""

  def _shapes(self):
    dims = lambda shape: [d if isinstance(d, int) else None for d in shape]
    output = {o.name: o for o in self._session.get_outputs()}["probabilities"]
    return dims(self._session.get_inputs()[0].shape), dims(output.shape)

  def _run(self, images):
    names = [o.name for o in self._session.get_outputs()]
    return dict(zip(names, self._session.run(names, {"images": images})))


class LiteRtModel(ExportedModel):
  kind = "tflite"

  def __init__(self, path):
    with open(path, "rb") as f:
      self._bytes = f.read()
    self._interpreter = _litert_interpreter(self._bytes)
    self._input = self._interpreter.get_input_details()[0]["index"]
    by_name = tflite_output_names(self._bytes)
    self._outputs = {by_name[d["name"]]: d for d in self._interpreter.get_output_details()}
    self._batch = None
    super().__init__(path)

  def _read_metadata(self):
    buffer = tflite_buffer(self._bytes, METADATA_KEY)
    return json.loads(buffer) if buffer else {}

  def _read_ood(self):
    return tflite_buffer(self._bytes, OOD_KEY)

  def _shapes(self):
    # The batch dimension is 1 until resized: only the others are the model's.
    inputs = [None] + [int(d) for d in self._interpreter.get_input_details()[0]["shape"][1:]]
    outputs = [None] + [int(d) for d in self._outputs["probabilities"]["shape"][1:]]
    return inputs, outputs

  def _run(self, images):
    if self._batch != len(images):  # resizing re-plans the interpreter's memory
      self._interpreter.resize_tensor_input(self._input, images.shape)
      self._interpreter.allocate_tensors()
      self._batch = len(images)
    self._interpreter.set_tensor(self._input, images)
    self._interpreter.invoke()
    return {name: self._interpreter.get_tensor(d["index"]).copy()
            for name, d in self._outputs.items()}


def _litert_interpreter(model_bytes: bytes):
  """LiteRT's interpreter (ai-edge-litert), else TensorFlow's copy of it."""
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError:
    from tensorflow.lite import Interpreter
  return Interpreter(model_content=model_bytes, num_threads=os.cpu_count())


def load(path: str) -> ExportedModel:
  """The exported model at `path`: a SavedModel directory, an .onnx or a .tflite file."""
  if os.path.isdir(path):
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
      raise UserError(f"--model={path}: a directory without saved_model.pb; expected a "
                      "SavedModel directory, an .onnx or a .tflite file")
    return _opened(SavedModel, path)
  if not os.path.isfile(path):
    raise UserError(f"--model={path}: no such file or directory")
  kinds = {".onnx": OnnxModel, ".tflite": LiteRtModel}
  extension = os.path.splitext(path)[1].lower()
  if extension not in kinds:
    raise UserError(f"--model={path}: expected a SavedModel directory, an .onnx or a .tflite "
                    "file")
  return _opened(kinds[extension], path)


def _opened(kind, path: str) -> ExportedModel:
  """`kind(path)`; a file its runtime cannot read is one line naming it."""
  try:
    return kind(path)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (each runtime has its own errors)
    raise UserError(f"--model={path}: damaged or not a {kind.kind} model written by "
                    f"bloodcell_jax.export ({errors.innermost_line(e)})") from None


def weights_described(metadata: dict) -> str:
  """Which weights an exported file holds, as its metadata records them."""
  checkpoint = metadata.get("checkpoint") or {}
  return checkpoint.get("described") or str(metadata.get("weights", "unrecorded weights"))


def size_bytes(path: str) -> int:
  """A file's size, or the total of a directory's files."""
  if not os.path.isdir(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


# LiteRT files carry named metadata buffers in their flatbuffer (schema: Model.metadata).
def with_tflite_buffers(model_bytes: bytes, buffers: dict) -> bytes:
  """The flatbuffer with each {name: bytes} of `buffers` as a named metadata buffer."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
  for name, data in buffers.items():
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name.encode(), len(model.buffers)
    model.buffers.append(buffer)
    model.metadata = [*(model.metadata or []), entry]
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tflite_schema():
  """The flatbuffer schema's reader: LiteRT's copy, which loads in 0.1 s, else TensorFlow's,
  which imports all of TensorFlow (3 s) first."""
  try:
    from ai_edge_litert import schema_py_generated as schema
  except ImportError:
    from tensorflow.lite.python import schema_py_generated as schema
  return schema


def tflite_buffer(model_bytes: bytes, name: str) -> bytes:
  """The metadata buffer `name` of a LiteRT flatbuffer (empty when absent)."""
  model = _tflite_schema().Model.GetRootAs(model_bytes, 0)
  for i in range(model.MetadataLength()):
    entry = model.Metadata(i)
    if entry.Name().decode() == name:
      return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
  return b""


def tflite_output_names(model_bytes: bytes) -> dict:
  """{output tensor name: the name its signature gives it (probabilities, ...)}; a file
  without a signature has one output, the probabilities."""
  model = _tflite_schema().Model.GetRootAs(model_bytes, 0)
  graph = model.Subgraphs(0)
  tensor_name = lambda index: graph.Tensors(index).Name().decode()
  if not model.SignatureDefsLength():
    return {tensor_name(graph.Outputs(0)): "probabilities"}
  signature = model.SignatureDefs(0)
  return {tensor_name(signature.Outputs(i).TensorIndex()): signature.Outputs(i).Name().decode()
          for i in range(signature.OutputsLength())}
