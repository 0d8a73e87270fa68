"""Structure of the packages: data flows one way (no import cycles), private names stay
private to their module, and ``dynamics`` never imports ``cube3d``."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cube3d", "dynamics")


def _module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "demo_data" in path.parts:
                continue
            yield _module_name(path), path


def _resolve(module, node):
    """Absolute name of the module an ``ImportFrom`` node imports from."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    is_package = (REPO / Path(*base) / "__init__.py").exists()
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports():
    """module -> list of (imported module, imported names) inside the packages, at any depth."""
    known = {name for name, _ in _sources()}
    graph = {}
    for name, path in _sources():
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, node)
                if target.split(".")[0] not in PACKAGES:
                    continue
                names = [a.name for a in node.names]
                # "from package import module" imports the submodule
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
                edges.extend((s, []) for s in subs)
                edges.append((target, [n for n in names if f"{target}.{n}" not in known]))
            elif isinstance(node, ast.Import):
                edges.extend((a.name, []) for a in node.names if a.name.split(".")[0] in PACKAGES)
        graph[name] = [(t, n) for t, n in edges if t in known and t != name]
    return graph


def _is_ancestor(a, b):
    return b.startswith(a + ".")


#: deferred imports that close a cycle on purpose, with the reason
ALLOWED_CYCLE_EDGES = {
    # Profile.__add__ returns a Composite, which is itself a Profile: the operator belongs to
    # the base class, the sum to its own module (imported when the operator runs)
    ("dynamics.profiles.base", "dynamics.profiles.composite"),
}


def test_no_import_cycles():
    """Between modules (a package importing its own submodules for re-export is not a cycle)."""
    graph = {m: {t for t, _ in edges if not _is_ancestor(m, t) and not _is_ancestor(t, m)
                 and (m, t) not in ALLOWED_CYCLE_EDGES}
             for m, edges in _imports().items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_names_imported_across_modules():
    offenders = []
    for module, edges in _imports().items():
        for target, names in edges:
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    offenders.append(f"{module} imports {target}.{n}")
    assert not offenders, offenders


def test_dynamics_never_imports_cube3d():
    offenders = [m for m, edges in _imports().items()
                 if m.startswith("dynamics") and any(t.startswith("cube3d") for t, _ in edges)]
    assert not offenders, offenders


def test_examples_and_benchmarks_import_names_that_exist():
    """Scripts are not run by the suite at full size: at least every name they import from
    the packages (at any depth, e.g. inside main()) must exist."""
    import importlib

    missing = []
    for path in sorted((REPO / "examples").glob("*.py")) + sorted((REPO / "tests" / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] in PACKAGES:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.name}: {node.module}.{alias.name}")
    assert not missing, missing
