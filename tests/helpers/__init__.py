"""Helpers shared by the tests (imported as `from helpers import runs`; pytest.ini puts tests/
on the path). Test modules import these, never each other or a conftest.py."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PBC96 = os.path.join(ROOT, "..", "shared", "data", "pbc96")
