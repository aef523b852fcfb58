"""clu metric collections of the train and eval steps."""

import flax
import jax
import jax.numpy as jnp
from clu import metrics


@flax.struct.dataclass
class ConfusionMatrix(metrics.Metric):
  """Counts of (true class, predicted class); masked examples are not counted."""
  matrix: jnp.ndarray

  @classmethod
  def from_model_output(cls, *, logits, labels, mask=None, **_):
    num_classes = logits.shape[-1]
    true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if mask is not None:
      true = true * mask[:, None]
    predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.float32)
    return cls(matrix=true.T @ predicted)

  def merge(self, other):
    return type(self)(matrix=self.matrix + other.matrix)

  def compute(self):
    return self.matrix


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  learning_rate: metrics.LastValue.from_output("learning_rate")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  confusion: ConfusionMatrix
