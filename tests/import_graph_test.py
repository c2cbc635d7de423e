"""The package's dependency rules, read from the source (ast) without importing anything.

Every import statement counts, function-local ones included: a function-local import is the usual way
to hide a cycle from the interpreter, and the design rule is about the modules' dependencies, not about
what happens to load first. Imports under `if TYPE_CHECKING:` are left out: they never run. So are
the implicit imports of parent packages (`import grace_jax.run.runs` also runs grace_jax/__init__.py):
every module has them; the `__init__` modules are nodes of their own, with their own imports checked.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "grace_jax"

# Top-level names of the repository that the installed runtime must never import: data preparation,
# developer tools and benchmarks are not part of the package, and the package reaches the configs as
# `grace_jax.configs` (the repository's configs/ folder, linked into the package).
NOT_RUNTIME = ("data_prep", "tools", "benchmarks", "configs")

# The model maths and the optimizer know nothing of the command line (transitively: nothing they
# import may import the CLI module either).
CLI_FREE = ("grace_jax.models", "grace_jax.losses", "grace_jax.optim")
CLI_MODULE = "grace_jax.infra.cli"


def _module_files() -> dict[str, pathlib.Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, outside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _imported_names(module: str) -> set[str]:
    """Absolute dotted names `module` imports; `from a import b` gives `a.b` when that is a module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:  # relative: `from . import x`, `from ..y import z`
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module
        for alias in node.names:
            candidate = f"{source}.{alias.name}"
            names.add(candidate if candidate in MODULES else source)
    return names


IMPORTS = {module: _imported_names(module) for module in MODULES}


def _package_module(name: str) -> str | None:
    """The package module `name` resolves to (its longest prefix that is one), or None."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _edges() -> dict[str, set[str]]:
    edges = {}
    for module, names in IMPORTS.items():
        targets = {_package_module(n) for n in names if n.split(".")[0] == PACKAGE}
        edges[module] = {t for t in targets if t and t != module}
    return edges


EDGES = _edges()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One closed path for each strongly connected component with more than one module (Tarjan)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_closed_path(edges, c) for c in components]


def _closed_path(edges: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path a -> ... -> a inside `component` (breadth-first, so a shortest one from its first module)."""
    start = min(component)
    parents = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges[v] & component):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _reachable(start: str) -> dict[str, str | None]:
    """Every module `start` imports, directly or not, with the module it was reached from."""
    parents = {start: None}
    frontier = [start]
    while frontier:
        v = frontier.pop()
        for w in sorted(EDGES[v]):
            if w not in parents:
                parents[w] = v
                frontier.append(w)
    return parents


def _chain(parents: dict[str, str | None], end: str) -> str:
    path = [end]
    while parents[path[-1]] is not None:
        path.append(parents[path[-1]])
    return " -> ".join(reversed(path))


def test_the_graph_is_read_from_every_module():
    """The rules below would pass vacuously on an empty or unresolved graph."""
    assert {"grace_jax", "grace_jax.train", "grace_jax.infra.errors", "grace_jax.models.clip"} <= set(MODULES)
    assert "grace_jax.infra.cpu_numerics" in EDGES["grace_jax"]
    # A function-local import counts (infra.cli imports infra.console inside a function only).
    assert "grace_jax.infra.console" in EDGES["grace_jax.infra.cli"]
    assert sum(map(len, EDGES.values())) > 100


def test_cycle_finder_reports_a_closed_path():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(edges) == [["a", "b", "c", "a"]]


def test_import_graph_has_no_cycle():
    cycles = _cycles(EDGES)
    assert not cycles, "import cycles among grace_jax modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_runtime_never_imports_data_prep_tools_benchmarks_or_top_level_configs():
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        for name in names
        if name.split(".")[0] in NOT_RUNTIME
    )
    assert not offenders, "\n".join(offenders)


def test_errors_module_imports_only_the_standard_library():
    names = IMPORTS["grace_jax.infra.errors"]
    outside = sorted(n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"__future__"})
    assert not outside, f"grace_jax/infra/errors.py imports {outside}"


@pytest.mark.parametrize("root", CLI_FREE)
def test_model_and_optimizer_never_reach_the_cli(root):
    modules = [m for m in MODULES if m == root or m.startswith(root + ".")]
    assert modules, root
    for module in modules:
        parents = _reachable(module)
        assert CLI_MODULE not in parents, _chain(parents, CLI_MODULE)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# The layers of docs/architecture.md: infra/ is the bottom (it imports nothing of grace_jax outside
# itself); the maths imports only itself, text/ (the model builds its class texts) and infra/.
INFRA = ("grace_jax.infra",)
MATHS = ("grace_jax.models", "grace_jax.losses", "grace_jax.optim", "grace_jax.sharding", "grace_jax.metrics")


def _layer_offenders(edges: dict[str, set[str]], layer: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        if _within(source, layer)
        for target in targets
        if target != PACKAGE and not _within(target, allowed)
    )


@pytest.mark.parametrize(
    "layer, allowed",
    [(INFRA, INFRA), (MATHS, MATHS + ("grace_jax.text",) + INFRA)],
    ids=["infra", "maths"],
)
def test_layers_import_only_what_they_may(layer, allowed):
    offenders = _layer_offenders(EDGES, layer, allowed)
    assert not offenders, "\n".join(offenders)


def test_layer_rule_catches_a_wrong_import():
    edges = {
        "grace_jax.infra.paths": {"grace_jax.train", "grace_jax.infra.errors"},
        "grace_jax.steps": {"grace_jax.run"},
    }
    assert _layer_offenders(edges, INFRA, INFRA) == ["grace_jax.infra.paths imports grace_jax.train"]
