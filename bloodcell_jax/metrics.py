"""clu metric collections for training and evaluation, and what they report."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
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


def summarize_confusion(confusion: np.ndarray, class_names, prefix: str) -> dict:
  """Accuracy, balanced accuracy and per-class accuracy (recall) from counts."""
  confusion = np.asarray(confusion, np.float64)
  support = confusion.sum(axis=1)
  recall = np.divide(np.diag(confusion), support, out=np.zeros_like(support),
                     where=support > 0)
  present = support > 0
  return {
      f"{prefix}_accuracy": float(np.trace(confusion) / max(confusion.sum(), 1.0)),
      f"{prefix}_balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
      f"per_class_{prefix}_accuracy": {name: float(r) for name, r, p in
                                       zip(class_names, recall, present) if p},
  }
