import ctypes.util
import os
import subprocess
import sys

import pytest

from helpers import ROOT

needs_tcmalloc = pytest.mark.skipif(not ctypes.util.find_library("tcmalloc_minimal"),
                                    reason="tcmalloc is not installed (libtcmalloc-minimal4)")

PROGRAM = ("import sys; from bloodcell_jax import runtime; runtime.restart_with_tcmalloc(); "
           "print(runtime.allocator(), sys.argv[1:])")


def allocator_of_program(**env):
  environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",
                                                                "BLOODCELL_JAX_ALLOCATOR")}
  return subprocess.run([sys.executable, "-c", PROGRAM, "--flag=1"], cwd=ROOT, check=True,
                        capture_output=True, text=True, env={**environ, **env}).stdout.strip()


@needs_tcmalloc
def test_a_program_restarts_itself_with_tcmalloc_and_keeps_its_arguments():
  assert allocator_of_program() == "tcmalloc ['--flag=1']"


@needs_tcmalloc
def test_the_system_allocator_can_be_asked_for():
  assert allocator_of_program(BLOODCELL_JAX_ALLOCATOR="system") == "system ['--flag=1']"
