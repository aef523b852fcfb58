"""The Keras weight port's download from a server that never answers stops in time, with
advice (its refusals of files that do not fit are in tests/e2e/test_port_keras.py)."""

import os
import socket
import time

import pytest

from bloodcell_jax.errors import UserError
from bloodcell_jax.weights import keras_port

MODEL = {"b0": "efficientnetv2-b0", "s": "efficientnetv2-s"}


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
