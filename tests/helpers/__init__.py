"""Helpers shared by the tests (imported as `from helpers import runs`; pytest.ini puts tests/
on the path). Test modules import these, never each other or a conftest.py."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PBC96 = os.path.join(ROOT, "..", "shared", "data", "pbc96")


def skip_or_fail_without_the_kernels():
  """The project's CPU kernels (models/native.py) built and registered, else a skip (a failure
  in CI, which installs the wheels and g++: the fast path must be there)."""
  import pytest  # pylint: disable=g-import-not-at-top

  from bloodcell_jax.models import native  # pylint: disable=g-import-not-at-top
  if not native.library():
    if os.environ.get("CI"):
      pytest.fail("the CPU kernels did not build (see the warning above)")
    pytest.skip("the CPU kernels are not available here")
