"""Rewrites of a converted LiteRT model's graph: flatbuffer bytes in, flatbuffer bytes out.

  model_bytes = litert_graph.without_redundant_broadcasts(converter.convert())

The graph is read with TensorFlow's flatbuffer object API (`tensorflow.lite.tools.
flatbuffer_utils`), edited in place and written back; tensors and buffers are kept, only
operators go.
"""

from typing import Dict, List, Sequence

# LiteRT ops that broadcast their inputs themselves.
BROADCASTING_OPS = frozenset({"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"})


def without_redundant_broadcasts(model_bytes: bytes) -> bytes:
  """The LiteRT model without the BROADCAST_TO ops whose consumers broadcast by themselves: a
  BatchNorm scale, a bias, ReLU's zero or a squeeze-excitation gate, each widened to the
  activation it meets.

  With a dynamic batch, StableHLO spells every broadcast out, and LiteRT's converter keeps it
  as an op that writes the small tensor at the activation's size before each use; XNNPACK
  then leaves those parts of the graph to the reference kernels (the CNN ran 7x slower).
  A broadcast goes only where each of its consumers is one of `BROADCASTING_OPS` whose other
  input is a full-size activation (not itself a broadcast) of the consumer's output shape, so
  no output changes shape; the shape arithmetic that fed only dropped broadcasts goes too.

  Args:
    model_bytes: a LiteRT flatbuffer, as `tf.lite.TFLiteConverter.convert()` returns it.

  Returns:
    The rewritten flatbuffer (the same model when no broadcast can go).
  """
  model = read_model(model_bytes)
  names = operator_names(model)
  for subgraph in model.subgraphs:
    broadcasts = removable_broadcasts(subgraph, names)
    if broadcasts:
      consumers = _consumers(subgraph.operators)
      for broadcast in broadcasts:
        _feed_input_to_consumers(broadcast, consumers[broadcast.outputs[0]])
      _remove_operators(subgraph, broadcasts)
  return write_model(model)


def read_model(model_bytes: bytes):
  """The model as TensorFlow's mutable flatbuffer objects (`schema_py_generated.ModelT`)."""
  from tensorflow.lite.tools import flatbuffer_utils
  return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))


def write_model(model) -> bytes:
  """The flatbuffer bytes of a model read by `read_model`."""
  from tensorflow.lite.tools import flatbuffer_utils
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def operator_names(model) -> List[str]:
  """The builtin op name of each of the model's operator codes, in their order (an op's
  `opcodeIndex` indexes it); "CUSTOM" for a custom op."""
  from tensorflow.lite.python import schema_py_generated as schema
  by_code = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
  # Codes above 127 are only in `builtinCode`; older files set only `deprecatedBuiltinCode`.
  return [by_code.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
          for code in model.operatorCodes]


def removable_broadcasts(subgraph, names: Sequence[str]) -> list:
  """The BROADCAST_TO operators of `subgraph` that every consumer can do without (see
  `without_redundant_broadcasts`); never one whose output is the subgraph's."""
  broadcasts = {int(op.outputs[0]): op for op in subgraph.operators
                if names[op.opcodeIndex] == "BROADCAST_TO"}
  consumers = _consumers(subgraph.operators)
  outputs = {int(i) for i in subgraph.outputs}
  return [op for output, op in broadcasts.items()
          if output not in outputs and consumers.get(output)
          and all(_broadcasts_itself(user, op, subgraph, names, broadcasts)
                  for user in consumers[output])]


def _broadcasts_itself(user, broadcast, subgraph, names: Sequence[str],
                       broadcasts: Dict[int, object]) -> bool:
  """Whether `user` computes the same tensor from the broadcast's input as from its output:
  a two-input broadcasting op whose other input is not broadcast, has the op's output shape
  and takes the broadcast's input without changing shape."""
  inputs = [int(i) for i in user.inputs]
  others = [i for i in inputs if i != int(broadcast.outputs[0])]
  if names[user.opcodeIndex] not in BROADCASTING_OPS or len(inputs) != 2 or len(others) != 1:
    return False
  other = others[0]
  return (other not in broadcasts
          and list(_shape(subgraph, other)) == list(_shape(subgraph, user.outputs[0]))
          and _broadcasts_into(_shape(subgraph, broadcast.inputs[0]), _shape(subgraph, other)))


def _shape(subgraph, tensor: int):
  """A tensor's shape, -1 for a dynamic dimension (the batch)."""
  tensor = subgraph.tensors[tensor]
  return tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape


def _broadcasts_into(small, full) -> bool:
  """Whether a tensor of shape `small` broadcasts into one of shape `full` (-1: the batch)
  without changing that shape."""
  if full is None or len(small) > len(full):
    return False
  return all(s == 1 or s == f for s, f in zip(reversed(list(small)), reversed(list(full))))


def _consumers(operators) -> Dict[int, list]:
  """Tensor index -> the operators that read it."""
  consumers = {}
  for op in operators:
    for i in op.inputs:
      consumers.setdefault(int(i), []).append(op)
  return consumers


def _feed_input_to_consumers(broadcast, consumers) -> None:
  """Rewires each consumer of the broadcast's output to read the broadcast's input instead."""
  output, source = int(broadcast.outputs[0]), int(broadcast.inputs[0])
  for op in consumers:
    op.inputs = [source if int(i) == output else int(i) for i in op.inputs]


def _remove_operators(subgraph, removed: list) -> None:
  """`subgraph` less the `removed` operators and those that then feed nothing (the shape
  arithmetic of dropped broadcasts)."""
  dropped = {id(op) for op in removed}
  subgraph.operators = _read_ops_only([op for op in subgraph.operators if id(op) not in dropped],
                                      {int(i) for i in subgraph.outputs})


def _read_ops_only(operators: list, outputs: set) -> list:
  """`operators` less those none of whose outputs is read, repeatedly."""
  while True:
    read = outputs | {int(i) for op in operators for i in op.inputs}
    kept = [op for op in operators if read & {int(i) for i in op.outputs}]
    if len(kept) == len(operators):
      return kept
    operators = kept
