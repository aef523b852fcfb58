"""The Keras weight port's refusals: files that do not fit the model or are another family's,
and downloads that cannot finish."""

import os
import shutil
import socket
import time
import warnings

import h5py
import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.weights import keras_port

MODEL = {"b0": "efficientnetv2-b0", "s": "efficientnetv2-s"}


def _copy_without_layer(src, dst, layer):
  shutil.copy(src, dst)
  with h5py.File(dst, "r+") as f:
    names = [n for n in f.attrs["layer_names"] if keras_port._text(n) != layer]
    f.attrs["layer_names"] = names
    del f[layer]


def test_port_refuses_files_that_do_not_fit(keras_ref, tmp_path):
  with pytest.raises(UserError, match=r"stem_conv/kernel has shape \(3, 3, 3, 24\), "
                     r"efficientnetv2-b0 expects .* is --model right"):
    keras_port.load_keras_weights(MODEL["b0"], str(keras_ref / "s_notop.h5"))
  _copy_without_layer(keras_ref / "b0_notop.h5", tmp_path / "cut.h5", "block4b_se_reduce")
  with pytest.raises(UserError, match=r"model variables missing from the file \(2\): "
                     r"params/block4b/se_reduce/bias, params/block4b/se_reduce/kernel"):
    keras_port.load_keras_weights(MODEL["b0"], str(tmp_path / "cut.h5"))
  (tmp_path / "junk.h5").write_text("not hdf5")
  with pytest.raises(UserError, match="junk.h5: not a readable HDF5 file"):
    keras_port.load_keras_weights(MODEL["b0"], str(tmp_path / "junk.h5"))
  with pytest.raises(UserError,
                     match="^--model=cnn: expected one of convnext-base, .*efficientnetv2-b0, "):
    keras_port.load_keras_weights("cnn", str(keras_ref / "b0_notop.weights.h5"))
  with pytest.raises(UserError, match="^--model=resnet50: expected one of convnext-base, "):
    keras_port.load_keras_weights("resnet50", str(keras_ref / "b0_notop.weights.h5"))
  # A Keras 3 file of another model: the error alone, not Keras's warning for every layer.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with pytest.raises(UserError, match=r"b0_notop.weights.h5: does not fit keras.applications"
                       r".EfficientNetV2S \(.*\); is --model right\?$"):
      keras_port.load_keras_weights(MODEL["s"], str(keras_ref / "b0_notop.weights.h5"))
  assert not caught


def test_port_refuses_another_familys_file(keras_ref):
  with pytest.raises(UserError, match=r"does not match mobilenetv3-small: file tensors with no "
                     r"place in the model \(\d+\): convnext_tiny_"):
    keras_port.load_keras_weights("mobilenetv3-small", str(keras_ref / "convnext_tiny_notop.h5"))


def test_download_from_a_server_that_never_answers_stops_with_the_same_advice(tmp_path):
  with socket.socket() as server:  # accepts connections (the backlog) and never replies
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^--download: no file from 127.0.0.1 \(.*timed out"
                       r".*\)\. On a machine with network access, fetch .* --keras_weights="):
      keras_port.download_keras_weights(
          MODEL["s"], include_top=False, stall_seconds=1.0, cache_dir=str(tmp_path),
          mirror=f"http://127.0.0.1:{server.getsockname()[1]}/weights/")
    assert time.monotonic() - started < 10
    assert not os.listdir(tmp_path)  # no partial file left
