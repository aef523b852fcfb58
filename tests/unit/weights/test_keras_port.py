"""The Keras weight port's download from a server that never answers stops in time, with
advice (its refusals of files that do not fit are in tests/e2e/test_port_keras.py)."""

import os
import socket
import threading
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


def _serve_in_background(body_chunks, pause: float):
  """A one-request HTTP server on 127.0.0.1 that sends 200, then `body_chunks` with `pause`
  seconds between them; returns its mirror URL."""
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(1)

  def answer():
    connection, _ = server.accept()
    with connection:
      connection.recv(65536)
      connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
      try:
        for chunk in body_chunks:
          connection.sendall(chunk)
          time.sleep(pause)
      except OSError:  # the client gave up
        pass
    server.close()

  threading.Thread(target=answer, daemon=True).start()
  return f"http://127.0.0.1:{server.getsockname()[1]}/weights/"


def test_download_that_trickles_stops_after_the_stall_limit_not_never(tmp_path):
  mirror = _serve_in_background([b"\x89"] * 1000, pause=0.2)  # 5 bytes/s, never a timeout
  started = time.monotonic()
  with pytest.raises(UserError, match=r"^--download: no file from 127.0.0.1 \(stalled: \d+ "
                     r"bytes in 1 s\)"):
    keras_port.download_keras_weights(MODEL["s"], include_top=False, stall_seconds=1.0,
                                      cache_dir=str(tmp_path), mirror=mirror)
  assert time.monotonic() - started < 10
  assert not os.listdir(tmp_path)


def test_an_answer_that_is_not_hdf5_is_refused_and_not_cached(tmp_path):
  mirror = _serve_in_background([b"<html><body>Sign in</body></html>"], pause=0.0)
  with pytest.raises(UserError, match=r"answered with something that is not an HDF5 file "
                     r"\(it starts '<html><body>Sign in"):
    keras_port.download_keras_weights(MODEL["s"], include_top=False, stall_seconds=5.0,
                                      cache_dir=str(tmp_path), mirror=mirror)
  assert not os.listdir(tmp_path)
