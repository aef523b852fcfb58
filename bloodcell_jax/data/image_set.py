"""ImageSet: images in memory with their labels, ids and provenance; the PBC class names."""

import dataclasses

import numpy as np

PBC_CLASS_NAMES = (
    "basophil", "eosinophil", "erythroblast", "ig",
    "lymphocyte", "monocyte", "neutrophil", "platelet",
)

@dataclasses.dataclass
class ImageSet:
  """Images held in memory with their labels and provenance."""
  images: np.ndarray  # uint8 (N, H, W, 3)
  labels: np.ndarray  # int32 (N,)
  ids: np.ndarray  # str (N,): relative path, or row index for arrays
  class_names: tuple
  name: str
  synthetic: bool = False
  num_resized: int = 0
  num_converted: int = 0  # greyscale / RGBA / palette images made RGB

  def __len__(self):
    return len(self.labels)

  def subset(self, indices) -> "ImageSet":
    return dataclasses.replace(
        self, images=self.images[indices], labels=self.labels[indices],
        ids=self.ids[indices])

  def describe(self) -> dict:
    return {"name": self.name, "synthetic": self.synthetic,
            "num_examples": len(self), "num_resized": self.num_resized,
            "num_converted": self.num_converted}

  def description(self) -> str:
    """One line for the log: what the images are, and what reading them changed."""
    if self.synthetic:
      return (f"{self.name}: SYNTHETIC embedded default data (procedurally drawn cells, "
              "not real images); pass --config.data.train=PATH for real data")
    extra = [f"{self.num_resized} resized to the configured size" if self.num_resized else "",
             f"{self.num_converted} converted to RGB" if self.num_converted else ""]
    return f"{self.name}: {len(self)} images" + "".join(f", {e}" for e in extra if e)
