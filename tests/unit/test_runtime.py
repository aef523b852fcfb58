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


X86_FLAGS = "fpu vme sse sse2 avx2 fma avx512f avx512bw avx512_vnni"


@pytest.mark.parametrize("cpuinfo, expected", [
    (f"processor\t: 0\nflags\t\t: {X86_FLAGS} avx512_bf16\n", True),  # AMD Zen 4
    (f"processor\t: 0\nflags\t\t: {X86_FLAGS} amx_bf16 amx_tile\n", True),  # Intel AMX
    (f"processor\t: 0\nflags\t\t: {X86_FLAGS}\n", False),
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm (Graviton 3)
    ("processor\t: 0\nFeatures\t: fp asimd crc32\nmodel name\t: bf16 lookalike\n", False),
])
def test_bfloat16_dot_products_are_read_from_cpuinfo(cpuinfo, expected):
  from bloodcell_jax import runtime  # pylint: disable=g-import-not-at-top
  assert runtime.bfloat16_in_cpuinfo(cpuinfo) is expected

