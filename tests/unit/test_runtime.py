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


CACHE_PROGRAM = ("import os, sys; from bloodcell_jax import runtime; runtime.set_up(); import jax; "
                 "f = jax.jit(lambda x: x @ x + 1); f(jax.numpy.ones((4, 4))).block_until_ready(); "
                 "print(jax.config.values['jax_compilation_cache_dir'])")


def run_cache_program(tmp_path, **env):
  environ = {k: v for k, v in os.environ.items()
             if not k.startswith(("JAX_", "BLOODCELL_JAX_COMPILATION"))}
  environ.update(XDG_CACHE_HOME=str(tmp_path / "home_cache"),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env)
  return subprocess.run([sys.executable, "-c", CACHE_PROGRAM], cwd=ROOT, check=True,
                        capture_output=True, text=True, env=environ).stdout.strip()


def test_programs_keep_compiled_programs_in_the_users_cache_folder(tmp_path):
  folder = tmp_path / "home_cache" / "bloodcell_jax" / "xla"
  assert run_cache_program(tmp_path) == str(folder)
  assert any(name.startswith("jit_") for name in os.listdir(folder))  # the compiled program


def test_the_compilation_cache_can_be_moved_or_turned_off(tmp_path):
  moved = tmp_path / "elsewhere"
  assert run_cache_program(tmp_path, BLOODCELL_JAX_COMPILATION_CACHE=str(moved)) == str(moved)
  assert os.listdir(moved)
  assert run_cache_program(tmp_path, BLOODCELL_JAX_COMPILATION_CACHE="off") == "None"
  assert not (tmp_path / "home_cache").exists()
