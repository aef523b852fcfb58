"""Metric writers: TensorBoard (clu) plus a metrics.jsonl that any tool can read."""

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers

from bloodcell_jax.training import run_files


class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON object per write: {"step": s, "name": value, ...}."""

  def __init__(self, path: str):
    self._file = open(path, "a")

  def _write(self, step: int, values: Mapping[str, Any]):
    record = {"step": int(step)}
    record.update({k: np.asarray(v).tolist() for k, v in values.items()})
    self._file.write(json.dumps(record) + "\n")

  def write_scalars(self, step, scalars):
    self._write(step, scalars)

  def write_texts(self, step, texts):
    self._write(step, texts)

  def write_hparams(self, hparams):
    self._write(0, {"hparams": dict(hparams)})

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard events and metrics.jsonl from process 0; logging only elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(workdir, just_logging=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                           asynchronous=False),
      JsonlWriter(os.path.join(workdir, run_files.METRICS)),
  ])
