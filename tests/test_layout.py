"""The package's layout, read from its source with `ast`: no import cycle among ddpm's modules,
and the math modules import nothing from the layers above them.

An edge A -> B means that running module A imports module B. `import ddpm.data.mnist` runs
ddpm/data/__init__.py first, so it is an edge to both, except to a package that A itself lies in
(that one is already being imported when A runs). `from . import name` is an edge to the submodule
`name` when there is one, else to the package's __init__ that defines `name`. Imports under
`if TYPE_CHECKING:` never run: no edges. Imports inside functions run when the function is called:
the graph counts them when asked (`deferred`), since a cycle that only such an import closes still
ties the modules together (the dataset registry and its loaders once formed one).
"""

from __future__ import annotations

import ast
import graphlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MATH = ["schedules", "diffusion", "samplers", "denoiser", "edm", "learned_variance",
        "noise_levels", "rng"]  # fmt: skip
ABOVE_MATH = ["models", "train", "data", "metrics", "cli", "generate", "evaluate"]
Graph = dict[str, set[str]]


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `package` (a package is its __init__)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(node: ast.AST, *, deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run with `node`'s code: its top level (class bodies, try and
    if blocks included, `if TYPE_CHECKING:` bodies not) and, when `deferred`, function bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and not deferred:
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            orelse = ast.Module(body=child.orelse, type_ignores=[])  # an `else:` does run
            yield from import_nodes(orelse, deferred=deferred)
        else:
            yield from import_nodes(child, deferred=deferred)


def _parents(name: str) -> list[str]:
    """The packages holding `name`, outermost first: ddpm.data.mnist -> [ddpm, ddpm.data]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: dict) -> list[str]:
    """The modules an import statement names explicitly (see the module docstring)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph(package: Path, *, deferred: bool) -> Graph:
    """module -> the modules of the same top-level package that importing it imports directly."""
    modules = module_files(package)
    top = package.name
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        own = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in import_nodes(ast.parse(path.read_text(), str(path)), deferred=deferred):
            for target in _targets(node, own, modules):
                if target != top and not target.startswith(top + "."):
                    continue
                while target and target not in modules:  # a name in a module, not a module
                    target = target.rpartition(".")[0]
                implicit = [p for p in _parents(target) if p not in _parents(name)]
                graph[name].update(t for t in (target, *implicit) if t != name)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle [a, b, ..., a] starting at its first module by name, or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        ring = list(reversed(error.args[1]))[:-1]  # graphlib lists it against the edges
        first = ring.index(min(ring))
        ring = ring[first:] + ring[:first]
        return [*ring, ring[0]]
    return None


def import_chains(graph: Graph, start: str) -> dict[str, list[str]]:
    """Each module that importing `start` imports, by the shortest chain of imports to it."""
    chains = {start: [start]}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for reached in sorted(graph[node] - chains.keys()):
            chains[reached] = [*chains[node], reached]
            queue.append(reached)
    return chains


def _in_layer(module: str, layers: list[str]) -> bool:
    """Whether ddpm.<layer>[.sub] is in `layers`; ddpm.cli_eval and the like count as cli."""
    layer = module.split(".")[1] if "." in module else ""
    return layer in layers or ("cli" in layers and layer.startswith("cli_"))


def test_no_import_cycle_at_import_time():
    cycle = find_cycle(import_graph(SRC / "ddpm", deferred=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_through_deferred_imports():
    cycle = find_cycle(import_graph(SRC / "ddpm", deferred=True))
    assert cycle is None, "import cycle (with imports inside functions): " + " -> ".join(cycle)


def test_math_modules_import_nothing_from_the_layers_above():
    graph = import_graph(SRC / "ddpm", deferred=True)
    math = [name for name in graph if _in_layer(name, MATH)]
    assert {name.split(".")[1] for name in math} == set(MATH), math  # all of them are checked
    found = [" -> ".join(chain) for start in math
             for reached, chain in import_chains(graph, start).items()
             if _in_layer(reached, ABOVE_MATH)]  # fmt: skip
    assert not found, "math imports a layer above it:\n" + "\n".join(found)


def write_package(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: source} under root; returns root / "pkg"."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


RE_EXPORT = {"pkg/__init__.py": "", "pkg/sub/__init__.py": "from .leaf import Leaf\n",
             "pkg/sub/other.py": "X = 1\n"}  # fmt: skip
BACK = ["pkg.sub", "pkg.sub.leaf", "pkg.sub"]


@pytest.mark.parametrize(
    ("leaf", "cycle"),
    [
        ("from . import Leaf\n", BACK),  # a name the package's __init__ defines
        ("from pkg.sub import Leaf\n", BACK),
        ("import pkg.sub\n", BACK),
        ("class C:\n    from . import Leaf\n", BACK),  # a class body runs at import
        ("try:\n    from . import Leaf\nexcept ImportError:\n    pass\n", BACK),
        ("from . import other\n", None),  # a sibling module: the package is already running
        ("from pkg.sub import other\n", None),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import Leaf\n", None),
        ("def f():\n    from . import Leaf\n", None),  # deferred: see the next test
    ],
)
def test_the_graph_sees_a_cycle_through_a_package_init(tmp_path, leaf, cycle):
    """A package __init__ that re-exports its child is no cycle by itself; the child importing
    the package (its __init__) back is one. Checked on a small package written for the test."""
    package = write_package(tmp_path, {**RE_EXPORT, "pkg/sub/leaf.py": leaf})
    assert find_cycle(import_graph(package, deferred=False)) == cycle


def test_a_cycle_is_printed_in_import_order(tmp_path):
    files = {**RE_EXPORT, "pkg/sub/leaf.py": "from .other import X\n",
             "pkg/sub/other.py": "from . import Leaf\n"}  # fmt: skip
    found = find_cycle(import_graph(write_package(tmp_path, files), deferred=False))
    assert found == ["pkg.sub", "pkg.sub.leaf", "pkg.sub.other", "pkg.sub"]


def test_deferred_imports_and_parent_packages(tmp_path):
    files = {**RE_EXPORT, "pkg/sub/leaf.py": "def f():\n    from . import Leaf\n",
             "pkg/a.py": "import pkg.sub.other\n", "pkg/b.py": "def f():\n    from .a import X\n"}  # fmt: skip
    package = write_package(tmp_path, files)
    graph = import_graph(package, deferred=False)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.other"}  # pkg/sub/__init__ runs first
    assert graph["pkg.b"] == set() and find_cycle(graph) is None
    deferred = import_graph(package, deferred=True)
    assert deferred["pkg.b"] == {"pkg.a"} and find_cycle(deferred) == BACK
