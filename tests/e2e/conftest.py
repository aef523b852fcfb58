"""Fixtures of the end-to-end tests."""

import pytest

from helpers import runs


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """(workdir, CompletedProcess) of the tiny recipe trained with runs.TRAINED_RUN_OVERRIDES: one
  run that several modules read (12 epochs with BatchNorm, a checkpoint every 3 steps, no early
  stopping)."""
  workdir = str(tmp_path_factory.mktemp("trained_run"))
  return workdir, runs.run_launch(workdir, *runs.TRAINED_RUN_OVERRIDES)
