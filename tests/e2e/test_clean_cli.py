"""The cleaning program on files: its report, keep list and contact sheets, and its errors."""

import collections
import json
import subprocess
import sys

import numpy as np
import pytest

from bloodcell_jax.data.cleaning import keep
from helpers import ROOT, cleaning
from helpers.runs import subprocess_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dirty_folder(tmp_path_factory):
  """An ImageFolder with an exact copy in another format, a conflict and near copies."""
  return cleaning.write_dirty_folder(str(tmp_path_factory.mktemp("dirty") / "data"))


def test_cli_writes_report_keep_list_and_sheets_and_never_touches_the_input(
    dirty_folder, tmp_path):
  root, ids, extra = dirty_folder
  before = cleaning.snapshot(root)
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "bloodcell_jax.data.clean", f"--data={root}", f"--out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=subprocess_env())
  assert result.returncode == 0, result.stderr[-3000:]
  assert "exact duplicates: 2 groups" in result.stdout
  assert "label conflicts:  1 groups" in result.stdout
  assert cleaning.snapshot(root) == before
  with open(out / "report.json") as f:
    written = json.load(f)
  kinds = collections.Counter(f["kind"] for f in written["findings"])
  assert kinds["exact_duplicate"] == 2 and kinds["near_duplicate"] == 5
  assert kinds["label_conflict"] == 1
  for finding in written["findings"]:
    assert set(finding) == {"kind", "ids", "score", "details"}
  kept = keep.read_ids(out / "keep.txt")
  # Of each group the first id stays; both images of the conflict go.
  dropped = {max(ids[k], extra[key]) for k, key in ((3, "exact_png"), (7, "flip"), (9, "rot90"),
                                                    (11, "jpeg70"), (13, "shift"),
                                                    (15, "nudged"))}
  dropped |= {ids[5], extra["conflict"]}
  dropped |= set(written["removed"]["contaminated"])
  everything = sorted(ids + list(extra.values()))
  assert kept == [i for i in everything if i not in dropped]
  sheets = sorted(p.name for p in out.glob("contact_*.png"))
  assert {"contact_exact_duplicate_1.png", "contact_near_duplicate_1.png",
          "contact_label_conflict_1.png"} <= set(sheets)


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such file or directory"),
    ("unreadable", "unreadable image"),
    ("npz_keys", "expected keys 'images' and 'labels'"),
    ("out_inside", "inside the input"),
    ("bad_setting", "--near_min_similarity=1.5: expected a value in"),
])
def test_bad_input_is_one_line_naming_the_path_or_flag(tmp_path, problem, message):
  root = tmp_path / "data"
  images, labels, _ = cleaning.cells(4, seed=2)
  cleaning.write_folder(str(root), images, labels)
  args = [f"--data={root}", f"--out={tmp_path / 'out'}"]
  if problem == "missing":
    args[0] = f"--data={tmp_path / 'nope'}"
  elif problem == "unreadable":
    (root / "basophil").mkdir(exist_ok=True)
    (root / "basophil" / "broken.jpg").write_bytes(b"not a jpeg")
  elif problem == "npz_keys":
    np.savez(tmp_path / "wrong.npz", pixels=images)
    args[0] = f"--data={tmp_path / 'wrong.npz'}"
  elif problem == "out_inside":
    args[1] = f"--out={root / 'report'}"
  elif problem == "bad_setting":
    args.append("--near_min_similarity=1.5")
  result = subprocess.run([sys.executable, "-m", "bloodcell_jax.data.clean", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last
  if problem == "unreadable":
    assert "broken.jpg" in last
