"""The package's shape: no import cycles, programs apart from the library."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "bloodcell_jax"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict:
  return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_main_block(node) -> bool:
  """`if __name__ == "__main__":`: runs only as a program, never on import."""
  test = getattr(node, "test", None)
  return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
          and isinstance(test.left, ast.Name) and test.left.id == "__name__")


def imported_modules(tree: ast.AST, modules: dict, importer: str) -> set:
  """The package modules a module imports, at the top or inside functions (not in its
  `__main__` block). `from a.b import c` is an import of a.b.c when that is a module."""
  found = set()

  def visit(node):
    if _is_main_block(node):
      return
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        if full in modules:
          found.add(full)
        elif node.module in modules:
          found.add(node.module)
    for child in ast.iter_child_nodes(node):
      visit(child)
  visit(tree)
  found.discard(importer)
  return found


def import_graph(modules: dict) -> dict:
  return {name: imported_modules(ast.parse(path.read_text()), modules, name)
          for name, path in modules.items()}


def find_cycle(graph: dict):
  """One import cycle as a list of modules (first == last), or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == "open":
        return stack[stack.index(target):] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_the_package_has_no_import_cycle():
  cycle = find_cycle(import_graph(package_modules()))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Layers from the bottom up: a package imports only packages of lower layers. The config
# package spans layers: its schema derives choice lists from the registries above the rest of it.
LAYERS = (
    ("errors", "config"),
    ("registry", "runtime", "atomic", "output_paths", "config.flat"),
    ("config.recorded", "config.stages", "config.recipes"),
    ("models", "augment"),
    ("data",),
    ("training",),
    ("weights",),
    ("evaluation",),
    ("results",),
    ("config.schema",),
    ("trainer",),
    ("sweep", "export"),
    ("cli",),
)


def layer_unit(module: str) -> str:
  """The layered unit a module belongs to: its sub-package (config's modules one by one)."""
  parts = module.split(".")[1:]
  if not parts:
    return ""
  return ".".join(parts[:2]) if parts[0] == "config" and len(parts) > 1 else parts[0]


def test_each_layer_imports_only_layers_below_it():
  rank = {unit: i for i, units in enumerate(LAYERS) for unit in units}
  upward = []
  for module, imported in import_graph(package_modules()).items():
    # Programs (a package's `python -m` entry) sit above every layer.
    if module.endswith("__main__") or layer_unit(module) not in rank:
      continue
    for target in imported:
      a, b = layer_unit(module), layer_unit(target)
      if a != b and b in rank and rank[b] >= rank[a]:
        upward.append(f"{module} -> {target}")
  assert not upward, "imports that do not go down the layers: " + "; ".join(sorted(upward))


def test_every_package_has_a_layer():
  units = {layer_unit(m) for m in package_modules()} - {""}
  # Top-level modules that only keep old `python -m` commands working run as programs.
  shims = {"predict", "table", "report", "robustness"}
  layered = {u for units in LAYERS for u in units}
  assert units - shims - layered == set()


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
  # The check itself must be able to fail: a function-level import closing a loop.
  modules = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py", "pkg.c": tmp_path / "c.py"}
  modules["pkg.a"].write_text("from pkg import b\n")
  modules["pkg.b"].write_text("def f():\n  from pkg import c\n")
  modules["pkg.c"].write_text("import pkg.a\n")
  assert find_cycle(import_graph(modules)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
  modules["pkg.c"].write_text('if __name__ == "__main__":\n  import pkg.a\n')
  assert find_cycle(import_graph(modules)) is None


def test_no_library_module_defines_flags():
  """Flags belong to the programs (bloodcell_jax/cli/): a library module that defined them at
  import would clash with another's (absl has one flag namespace per process)."""
  offenders = []
  for name, path in package_modules().items():
    if name.startswith("bloodcell_jax.cli"):
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith("DEFINE")):
        offenders.append(name)
  assert not offenders, f"library modules that define flags: {sorted(set(offenders))}"


@pytest.mark.parametrize("program", sorted(
    p.stem for p in (PACKAGE / "cli").glob("*.py") if p.stem not in ("__init__", "common",
                                                                      "distributed")))
def test_each_program_imports_the_library_inside_main(program):
  """A program's import costs its flags only: the library (JAX, TensorFlow) loads in main()
  after runtime.set_up()."""
  tree = ast.parse((PACKAGE / "cli" / f"{program}.py").read_text())
  # Light modules a program may need for its flags: no JAX, no TensorFlow.
  allowed = {"bloodcell_jax.cli", "bloodcell_jax.errors", "bloodcell_jax.runtime",
             "bloodcell_jax.data.cleaning.settings"}
  top_level = [n for n in tree.body if isinstance(n, ast.ImportFrom)
               and (n.module or "").startswith("bloodcell_jax")]
  library = [f"{n.module}.{a.name}" for n in top_level for a in n.names
             if n.module not in allowed and f"{n.module}.{a.name}" not in allowed]
  assert not library, f"cli/{program}.py imports {library} at the top"
  assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
