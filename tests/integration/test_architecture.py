"""Acceptance (docs/architecture.md): the package's import rules, read from the source with ``ast``.

* no module inside ``interp`` imports the root package (``import interp`` / ``from interp
  import x``): only the facade ``interp/__init__.py`` and the ``python -m interp`` entry do;
* no private name (``_x``) is imported from another top-level package of ``interp``;
* the module import graph (every import, also those inside functions) has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "interp"
ENTRY_POINTS = {"interp", "interp.__main__"}


def _module_name(path: Path) -> str:
    parts = ["interp", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    """The top-level package a module belongs to (``interp.ilo.api`` -> ``interp.ilo``)."""
    return ".".join(module.split(".")[:2])


def _imports(module: str):
    """``(imported module, imported name or None, line)`` for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "interp":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "interp":
                continue
            for alias in node.names:
                yield source, alias.name, node.lineno


def _target(source: str, name: str | None) -> str:
    """The module an import statement loads: ``from interp.ilo import api`` loads ``interp.ilo.api``."""
    if name is not None and f"{source}.{name}" in MODULES:
        return f"{source}.{name}"
    return source


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))  # dunders are public


def test_the_walk_sees_the_package():
    # the rules below are vacuous if the walk finds nothing: it must see the packages and their imports
    assert {"interp.ilo.api", "interp.neighbors.api", "interp.parallel.collectives"} <= set(MODULES)
    assert ("interp.ilo.inputs", "check_inputs") in {(s, n) for s, n, _ in _imports("interp.ilo.api")}


def test_no_module_imports_the_root_package():
    offenders = [
        f"{module}:{line} imports {source if name is None else f'{name} from {source}'}"
        for module in MODULES
        if module not in ENTRY_POINTS
        for source, name, line in _imports(module)
        if source == "interp" and (name is None or f"interp.{name}" not in MODULES)
    ]
    assert not offenders, "import the submodule that defines it instead:\n" + "\n".join(offenders)


def test_no_private_name_crosses_packages():
    offenders = [
        f"{module}:{line} imports {name} from {source}"
        for module in MODULES
        for source, name, line in _imports(module)
        if name is not None and _is_private(name) and _package(source) != _package(module)
    ]
    assert not offenders, "make the name public in its package, or move the code:\n" + "\n".join(offenders)


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path ``[a, ..., a]``, or None (iterative depth-first search)."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path, on_path, stack = [start], {start}, [iter(graph[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:  # every import of path[-1] explored
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                stack.pop()
                continue
            if nxt in on_path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(graph[nxt]))
    return None


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_the_import_graph_has_no_cycle():
    graph = {m: sorted({_target(s, n) for s, n, _ in _imports(m)} & set(MODULES) - {m}) for m in MODULES}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_renamed_constants_keep_their_old_names_for_one_release():
    import interp.neighbors
    import interp.similarity
    import interp.vlm

    for module, old, new in [(interp.neighbors, "METRICS", "DISTANCE_METRICS"),
                             (interp.similarity, "METRICS", "MEASURES"),
                             (interp.vlm, "METRICS", "ALIGNMENT_METRICS")]:  # fmt: skip
        with pytest.warns(DeprecationWarning, match=f"{module.__name__}.{old} is deprecated; use .*{new}"):
            assert getattr(module, old) == getattr(module, new)
        with pytest.raises(AttributeError, match="has no attribute 'NOPE'"):
            module.NOPE  # noqa: B018
