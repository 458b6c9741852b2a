"""The package's shape: no import cycle between pokedemo's modules, no module reaching into another's private
names, nothing done at ``import pokedemo``, developer tools outside the package.

Imports are read from the source with ``ast`` (all of them, including those inside functions), so a lazy
import counts like one at the top: a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ImportGraph:
    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    private_uses: list[str] = field(default_factory=list)  # "module:line uses other.module._name"


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path) -> ImportGraph:
    """Every import of the package's own modules by its modules, and every private name used across them."""
    package_dir = Path(package_dir)
    modules = {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}
    graph = ImportGraph(modules, {name: set() for name in modules})
    for name, path in modules.items():
        _read_module(graph, name, ast.parse(path.read_text(encoding="utf-8"), str(path)), package_dir.name)
    return graph


def _read_module(graph: ImportGraph, name: str, tree: ast.Module, package: str) -> None:
    bound: dict[str, str] = {}  # local name → the package module it refers to
    is_package = graph.modules[name].name == "__init__.py"

    def ours(module: str) -> bool:
        return module == package or module.startswith(package + ".")

    def private(attr: str) -> bool:
        return attr.startswith("_") and not attr.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    graph.edges[name].add(alias.name)
                    bound[alias.asname or package] = alias.name if alias.asname else package
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, is_package)
            if not ours(base):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in graph.modules:
                    graph.edges[name].add(submodule)
                    bound[alias.asname or alias.name] = submodule
                    continue
                graph.edges[name].add(base)
                if private(alias.name):
                    graph.private_uses.append(f"{name}:{node.lineno} imports {base}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            target = _module_of(node.value, bound)
            if target in graph.modules and target != name:
                graph.private_uses.append(f"{name}:{node.lineno} uses {target}.{node.attr}")
    graph.edges[name].discard(name)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name of ``from X import ...`` (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[:len(anchor) - node.level + 1]
    return ".".join(anchor + ([node.module] if node.module else []))


def _module_of(value: ast.expr, bound: dict[str, str]) -> str | None:
    """``hub`` or ``pokedemo.hub`` in ``hub._x`` / ``pokedemo.hub._x`` → the module it names, if one of ours."""
    chain = []
    while isinstance(value, ast.Attribute):
        chain.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name) or value.id not in bound:
        return None
    return ".".join([bound[value.id], *reversed(chain)])


def import_cycles(graph: ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every cycle is in one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.edges[module] & graph.modules.keys()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


# ------------------------------------------------------------------------------------------ the checker itself


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root / next(iter(files)).split("/")[0]


def test_the_checker_finds_a_cycle_through_a_lazy_import_and_private_names(tmp_path):
    package = write_package(tmp_path, {
        "toy/__init__.py": "",
        "toy/a.py": "from toy.b import helper\n",
        "toy/b.py": "def helper():\n    from toy import c\n    return c._secret\n",
        "toy/c.py": "from . import a\nfrom toy.sub.d import _hidden\n_secret = 1\n",
        "toy/sub/__init__.py": "",
        "toy/sub/d.py": "import toy.sub as s\n_hidden = s.__name__\n",
        "toy/e.py": "import toy.a\nimport os\nx = toy.a._private\ny = os._exit\n",
    })
    graph = import_graph(package)
    assert graph.edges["toy.c"] == {"toy.a", "toy.sub.d"}  # relative import resolved; a lazy one counted
    assert import_cycles(graph) == [["toy.a", "toy.b", "toy.c"]]
    assert sorted(graph.private_uses) == [
        "toy.b:3 uses toy.c._secret", "toy.c:2 imports toy.sub.d._hidden", "toy.e:3 uses toy.a._private"]


def test_the_checker_accepts_a_clean_package(tmp_path):
    package = write_package(tmp_path, {
        "toy/__init__.py": "from toy.a import run\n",
        "toy/a.py": "from toy.b import helper\n\ndef run():\n    return helper()\n",
        "toy/b.py": "def helper():\n    return _own()\n\ndef _own():\n    return 1\n",
    })
    graph = import_graph(package)
    assert import_cycles(graph) == [] and graph.private_uses == []


# ------------------------------------------------------------------------------------------ pokedemo


def test_pokedemo_has_no_import_cycle():
    graph = import_graph(REPO_ROOT / "pokedemo")
    assert len(graph.modules) > 20 and graph.edges["pokedemo.train"]  # the walk really read the package
    assert import_cycles(graph) == []


def test_no_pokedemo_module_uses_another_modules_private_names():
    assert import_graph(REPO_ROOT / "pokedemo").private_uses == []


def _python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env={**clean, **env}, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_importing_pokedemo_does_nothing_and_the_entry_points_set_the_thread_policy():
    assert _python("import os, sys, pokedemo, pokedemo.cli\n"
                   "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)") == "None False"
    entry = "import os, runpy\nrunpy.run_module('pokedemo', run_name='probe')\nprint(os.environ['OMP_WAIT_POLICY'])"
    assert _python(entry) == "PASSIVE"
    assert _python(entry, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # a user's own choice wins
    assert _python("import os, benchmarks.bench\nprint(os.environ.get('OMP_WAIT_POLICY'))") == "None"
    bench = ("import contextlib, io, os\nfrom benchmarks.bench import main\n"
             "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
             "    main(['--help'])\nprint(os.environ['OMP_WAIT_POLICY'])")
    assert _python(bench) == "PASSIVE"


def test_developer_tools_live_outside_the_package():
    assert not (REPO_ROOT / "pokedemo" / "bench.py").exists() and (REPO_ROOT / "benchmarks" / "bench.py").is_file()
