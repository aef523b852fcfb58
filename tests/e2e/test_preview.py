"""The augmentation preview program draws every op and the configured pipelines."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bloodcell_jax.augment import policies
from helpers import ROOT
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e


def test_preview_draws_every_op_and_the_configured_pipeline(tmp_path):
  out = tmp_path / "grid.png"
  result = subprocess.run(
      [sys.executable, "-m", "bloodcell_jax.data.preview", "--config=configs/effnet.py",
       f"--out={out}", "--magnitudes=0,0.5,1", "--pipeline_rows=3"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())
  assert result.returncode == 0, result.stderr[-2000:]
  # original + one row per op + originals + 3 train rows + 2 eval_strong rows
  assert f"{1 + len(policies.LEVELS) + 1 + 3 + 2} rows" in result.stdout
  grid = np.asarray(Image.open(out))
  assert grid.shape[0] > grid.shape[1] and grid.std() > 20
  bad = subprocess.run(
      [sys.executable, "-m", "bloodcell_jax.data.preview", "--config=configs/effnet.py",
       f"--out={out}", "--magnitudes=0,2"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())
  assert bad.returncode == 2 and "--magnitudes=0,2: expected numbers in [0, 1]" in bad.stderr
