"""The tensorflow-datasets builder's program prepares the same dataset."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT, images
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def folder_and_keep(tmp_path_factory):
  """A 48-image ImageFolder (PNG, 6 per class) and a keep.txt that drops 8 of them."""
  return images.write_folder_and_keep_file(tmp_path_factory.mktemp("tfds"))


def test_the_module_cli_prepares_the_same_dataset(folder_and_keep, tmp_path):
  root, _, kept = folder_and_keep
  result = subprocess.run(
      [sys.executable, "-m", "bloodcell_jax.data.build_tfds", f"--source={root / 'data'}",
       f"--keep_file={root / 'keep.txt'}", "--name=cli", f"--data_dir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert "prepared pbc_cells/cli/1.0.0" in result.stdout
  with open(tmp_path / "pbc_cells" / "cli" / "1.0.0" / "dataset_info.json") as f:
    info = json.load(f)
  counts = sum(int(s["shardLengths"][0]) for s in info["splits"])
  assert counts == len(kept)
