"""litert_graph on small LiteRT models converted by TensorFlow with a dynamic batch."""

import collections

import numpy as np
import pytest

from bloodcell_jax.export import litert_graph

tf = pytest.importorskip("tensorflow")

_SCALE = np.linspace(0.5, 2.0, 4, dtype=np.float32)
_BIAS = np.linspace(-1.0, 1.0, 4, dtype=np.float32)
_SPEC = tf.TensorSpec([None, 5, 4], tf.float32)


def _affine_relu(x):
  """x * scale + bias, then ReLU, with every constant broadcast to x's dynamic shape (as
  StableHLO spells them out): all three broadcasts can go, and the shape with them."""
  shape = tf.shape(x)
  y = x * tf.broadcast_to(_SCALE, shape) + tf.broadcast_to(_BIAS, shape)
  return tf.maximum(y, tf.broadcast_to(tf.constant(0.0), shape))


def _with_broadcasts_to_keep(x):
  """One broadcast that can go (the bias) and three that must stay: one concatenated (its
  consumer does not broadcast) and two that meet each other (no full-size input)."""
  shape = tf.shape(x)
  y = x + tf.broadcast_to(_BIAS, shape)
  gate = tf.broadcast_to(_SCALE, shape) * tf.broadcast_to(tf.constant(3.0), shape)
  return tf.concat([y + gate, tf.broadcast_to(tf.constant(-2.0), shape)], axis=-1)


def _onto_a_narrower_input(x):
  """A broadcast that must stay although its consumer broadcasts: the other input is
  narrower than the result, (N, 1, 4) against (N, 5, 4)."""
  return tf.broadcast_to(_SCALE, tf.shape(x)) + tf.reduce_mean(x, axis=1, keepdims=True)


# function, (BROADCAST_TO, SHAPE) ops before and after.
_MODELS = {
    "affine_relu": (_affine_relu, (3, 1), (0, 0)),
    "with_broadcasts_to_keep": (_with_broadcasts_to_keep, (4, 1), (3, 1)),
    "onto_a_narrower_input": (_onto_a_narrower_input, (1, 1), (1, 1)),
}


def _litert_model(function) -> bytes:
  traced = tf.function(function, input_signature=[_SPEC])
  return tf.lite.TFLiteConverter.from_concrete_functions([traced.get_concrete_function()],
                                                         traced).convert()


def _op_counts(model_bytes: bytes) -> collections.Counter:
  """How many times each builtin op occurs, read with TensorFlow's flatbuffer reader."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
  names = {code: name for name, code in vars(schema.BuiltinOperator).items()}
  codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
  return collections.Counter(names[codes[op.opcodeIndex]]
                             for subgraph in model.subgraphs for op in subgraph.operators)


def _run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_content=model_bytes)
  index = interpreter.get_input_details()[0]["index"]
  interpreter.resize_tensor_input(index, x.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(index, x)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.fixture(scope="module", params=sorted(_MODELS))
def converted(request):
  """(model name, its LiteRT bytes, the same without redundant broadcasts)."""
  original = _litert_model(_MODELS[request.param][0])
  return request.param, original, litert_graph.without_redundant_broadcasts(original)


def test_removes_the_broadcasts_whose_consumers_broadcast_themselves(converted):
  name, original, rewritten = converted
  _, before, after = _MODELS[name]
  counts = _op_counts(original), _op_counts(rewritten)
  assert [(c["BROADCAST_TO"], c["SHAPE"]) for c in counts] == [before, after]
  others = [{op: n for op, n in c.items() if op not in ("BROADCAST_TO", "SHAPE")}
            for c in counts]
  assert others[0] == others[1]


@pytest.mark.parametrize("batch", [1, 7])
def test_outputs_are_unchanged(converted, batch):
  _, original, rewritten = converted
  x = np.random.default_rng(batch).normal(size=(batch, 5, 4)).astype(np.float32)
  want, got = _run(original, x), _run(rewritten, x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_model_without_broadcasts_is_left_as_it_is():
  original = _litert_model(lambda x: x * 2.0 + 1.0)
  assert _op_counts(litert_graph.without_redundant_broadcasts(original)) == _op_counts(original)
