"""The package's layering (docs/architecture.md), checked on its imports: no cycle, no private name
imported across modules, imports flowing one way between the folders, and the optimizer apart
from the offline rule generator.

Every module of ``eqsat/`` is parsed with ``ast``, and every import it makes — at module level
and deferred (inside a function) alike, relative ones resolved — becomes an edge to the eqsat
module it names. A deferred import is still a dependency: it only moves the cycle from import
time to call time. ``from eqsat.egraph import ops`` is an edge to the module
``eqsat.egraph.ops``; ``from eqsat.egraph.ops import OPS`` to ``eqsat.egraph.ops``. Importing a
module also runs the ``__init__`` of each package above it, so those packages are edges too,
except the packages the importing module is itself inside (Python has initialized them before
it runs, so a sibling import adds no dependency on them) and the root package ``eqsat``: it is
the public API, whose ``optimize`` imports the pipeline on call, and every module is inside it.
An explicit ``from eqsat import x`` does count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

import eqsat

ROOT = Path(eqsat.__file__).resolve().parent
# docs/architecture.md: imports flow egraph <- rules <- extract <- lower <- backends
LAYERS = ["egraph", "rules", "extract", "lower", "backends"]
# who may import these modules (besides themselves); the pipeline composes the stages, the CLI
# calls it, the package's ``optimize`` is the pipeline's API, ``python -m eqsat`` the CLI's;
# ``eqsat.bench`` (``eqsat bench``) runs the pipeline twice and times the results
# the CLI is ``eqsat.cli`` and the modules of its commands beside it, which only it imports
CLI_COMMANDS = {"eqsat.cli_optimize", "eqsat.cli_rules", "eqsat.cli_compile", "eqsat.cli_tune"}
CLI = {"eqsat.cli", "eqsat.cli_common", *CLI_COMMANDS}
IMPORTERS = {
    "eqsat.pipeline": {"eqsat", "eqsat.bench", *CLI},
    "eqsat.cli": {"eqsat.__main__"},
    "eqsat.cli_common": CLI,
    **{m: {"eqsat.cli"} for m in CLI_COMMANDS},
}
# who may import verify/ (besides verify itself; tests are not walked)
VERIFY_IMPORTERS = {"eqsat.pipeline", "eqsat.bench", *CLI}
# the offline rule generator: the optimizer must not load it (enumeration, Z3, process pools)
GENERATOR = "eqsat.rules.discover"
# the CLI runs it; the op coverage matrix (``eqsat ops``) shows which discovery op stands for
# each table op. Neither is on the optimizer's path: the last test walks that path.
GENERATOR_IMPORTERS = {"eqsat.cli_rules", "eqsat.verify.coverage"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    """The package a module's relative imports are relative to."""
    is_init = MODULES[module].name == "__init__.py"
    return module if is_init else module.rpartition(".")[0]


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(eqsat module, name imported from it or None) for each name of an import statement."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = _package(module).split(".")
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


def _imports() -> list[tuple[str, str, str | None, int]]:
    """(importer, imported eqsat module, name or None, line) for every import in eqsat/."""
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target, name in _targets(module, node):
                    if target == "eqsat" or target.startswith("eqsat."):
                        out.append((module, target, name, node.lineno))
    return out


IMPORTS = _imports()


def _graph() -> dict[str, set[str]]:
    """Module -> the eqsat modules importing it runs (see the module docstring)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, target, _, _ in IMPORTS:
        parts = target.split(".")
        for k in range(2, len(parts) + 1):
            q = ".".join(parts[:k])
            inside = k < len(parts) and (module == q or module.startswith(q + "."))
            if q in MODULES and q != module and not inside:
                edges[module].add(q)
        if target == "eqsat":
            edges[module].add("eqsat")
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path m0 -> .. -> m0) through each strongly connected component of more than
    one module, or of a module that imports itself (the components from scipy's csgraph)."""
    names = sorted(edges)
    at = {m: i for i, m in enumerate(names)}
    pairs = [(at[v], at[w]) for v in names for w in edges[v] if w in at]
    rows, cols = zip(*pairs, strict=True) if pairs else ((), ())
    graph = csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(graph, directed=True, connection="strong")
    comps: dict[int, list[str]] = {}
    for m, label in zip(names, labels, strict=True):
        comps.setdefault(int(label), []).append(m)
    cyclic = [c for c in comps.values() if len(c) > 1 or c[0] in edges[c[0]]]
    return [_path_through(c, edges) for c in sorted(cyclic)]


def _path_through(comp: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to it (breadth first)."""
    start, members = comp[0], set(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:  # v -> start closes the cycle start -> .. -> v -> start
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {comp}")


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_walk_sees_deferred_relative_and_package_imports():
    """The walk finds what the checks need: a deferred import (the CLI imports the pipeline
    inside its commands), a module named by ``from package import module``, and the ``__init__``
    of a package above the imported module."""
    edges = _graph()
    assert "eqsat.pipeline" in edges["eqsat.cli"]
    assert "eqsat.rules.generated.rulefile" in edges["eqsat.rules.schedule"]
    assert "eqsat.rules.generated" in edges["eqsat.rules.schedule"]
    assert ("eqsat.egraph.ops", None) == _targets(
        "eqsat.pipeline", ast.parse("from .egraph import ops").body[0]
    )[0]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"a"}, "b": set()}) == [["a", "a"]]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    bad = [
        f"{module} (line {line}) imports {name} from {target}"
        for module, target, name, line in IMPORTS
        if name and name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert bad == [], "private names imported across modules:\n" + "\n".join(bad)


def test_imports_flow_one_way():
    bad = []
    for module, target in sorted({(m, t) for m, t, _, _ in IMPORTS}):
        mine, theirs = _folder(module), _folder(target)
        for guarded, allowed in IMPORTERS.items():
            if target == guarded and module not in allowed:
                bad.append(f"{module} imports {target} (only {sorted(allowed)} may)")
        if theirs == "verify" and mine != "verify" and module not in VERIFY_IMPORTERS:
            bad.append(f"{module} imports {target} (verify is read by pipeline, cli and tests)")
        if mine in LAYERS and theirs in LAYERS and LAYERS.index(theirs) > LAYERS.index(mine):
            bad.append(f"{module} ({mine}) imports {target} ({theirs}, a later stage)")
    assert bad == [], "imports against the layering:\n" + "\n".join(bad)


def test_the_optimizer_does_not_reach_the_rule_generator():
    """Only the CLI imports the generator (so no other module can reach it); the optimizer's
    modules reach the generated rules' loader, not the generator."""
    bad = [
        f"{module} imports {target}"
        for module, target in sorted({(m, t) for m, t, _, _ in IMPORTS})
        if _within(target, GENERATOR)
        and not _within(module, GENERATOR)
        and module not in GENERATOR_IMPORTERS
    ]
    assert bad == [], "the rule generator is imported by:\n" + "\n".join(bad)
    edges = _graph()
    for runtime in ("eqsat.rules.schedule", "eqsat.pipeline"):
        reached, todo = set(), [runtime]
        while todo:
            for w in edges[todo.pop()] - reached:
                reached.add(w)
                todo.append(w)
        assert "eqsat.rules.generated.rulefile" in reached, runtime
        assert sorted(m for m in reached if _within(m, GENERATOR)) == [], runtime


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")
