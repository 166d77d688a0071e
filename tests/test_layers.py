"""Imports point down only: hived/core is I/O-free, and no module imports a higher layer."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent / "hived"

# Lowest first. A module may import modules of its own layer or of lower ones.
LAYERS: Final = (
    ("hived.core",),
    (
        "hived.logs",
        "hived.memory",
        "hived.configfile",
        "hived.systemd",
        "hived.hub",
        "hived.history",
        "hived.agents",  # the package itself imports nothing
        "hived.agents.orphans",
        "hived.agents.process",
        "hived.agents.shim",
        "hived.agents.shimrun",
        "hived.client",
    ),
    (
        "hived.store",
        "hived.notify",
        "hived.agents.observed",
        "hived.agents.session",
        "hived.agents.supervisor",
        "hived.server",
    ),
    ("hived.admin", "hived.records", "hived.archive", "hived.metrics", "hived.cluster"),
    ("hived.daemon",),
    ("hived.cli",),
)

# What the core must never touch: event loops, sockets, processes, databases.
CORE_FORBIDDEN: Final = (
    "trio",
    "trio_websocket",
    "wsproto",
    "asyncio",
    "socket",
    "ssl",
    "subprocess",
    "sqlite3",
    "select",
    "selectors",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int | None:
    if name == "hived":  # the package itself holds only its version
        return 0
    # The longest prefix names the layer: hived.agents holds modules of several layers.
    matches = [
        (len(prefix), index)
        for index, layer in enumerate(LAYERS)
        for prefix in layer
        if name == prefix or name.startswith(prefix + ".")
    ]
    return max(matches)[1] if matches else None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.AST) -> Iterator[str]:
    """Every module imported at run time (imports under ``if TYPE_CHECKING:`` are not)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (name for child in node.orelse for name in runtime_imports(child))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        else:
            yield from runtime_imports(node)


MODULES: Final = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    unplaced = [module_name(p) for p in MODULES if layer_of(module_name(p)) is None]
    assert not unplaced, f"add these modules to LAYERS in {__file__}: {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_point_down(path: Path) -> None:
    name = module_name(path)
    own = layer_of(name)
    if own is None:
        pytest.fail(f"{name} has no layer")
    for imported in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        top = imported.split(".")[0]
        if own == 0:
            assert top not in CORE_FORBIDDEN, f"{name} (core) imports {imported}"
        if top == "hived" and imported != "hived":
            target = layer_of(imported)
            assert target is not None, f"{name} imports {imported}, which has no layer"
            assert target <= own, f"{name} (layer {own}) imports {imported} (layer {target})"


def test_the_shim_needs_nothing_but_the_standard_library() -> None:
    # It runs alone (python -m hived.agents.shim), outliving the daemon: no hived module, no package.
    path = ROOT / "agents" / "shim.py"
    imported = {name.split(".")[0] for name in runtime_imports(ast.parse(path.read_text()))}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_the_checker_catches_an_upward_import() -> None:
    tree = ast.parse("import trio\nfrom hived.daemon import Daemon\n")
    assert list(runtime_imports(tree)) == ["trio", "hived.daemon"]
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n")
    assert "trio" not in list(runtime_imports(guarded))
    assert layer_of("hived.daemon") == 4 > layer_of("hived.core.config") == 0  # type: ignore[operator]


def every_import(tree: ast.AST, modules: set[str]) -> Iterator[str]:
    """Every hived module ``tree`` imports, type-only imports too; ``from package import module``
    names the module, not the package."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in modules:
                    yield full
                elif node.module in modules:
                    yield node.module


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as the path that closes it), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for target in sorted(graph[name]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(name)
        return None

    return next((cycle for name in sorted(graph) if (cycle := visit(name))), None)


def test_no_two_modules_import_each_other_even_for_types() -> None:
    # A package's __init__ may gather its own modules; nothing else may close a circle (admin
    # names what it needs of the daemon as a Protocol instead of importing it).
    modules = {module_name(path) for path in MODULES}
    graph = {
        name: {
            target
            for target in every_import(ast.parse(path.read_text(encoding="utf-8")), modules)
            if target != name and not (path.name == "__init__.py" and target.startswith(name + "."))
        }
        for path in MODULES
        for name in [module_name(path)]
    }
    assert import_cycle(graph) is None, " → ".join(import_cycle(graph) or ())


def test_the_cycle_finder_finds_a_type_only_circle() -> None:
    tree = ast.parse("if TYPE_CHECKING:\n    from hived.daemon import Daemon\n")
    assert list(every_import(tree, {"hived.daemon", "hived.admin"})) == ["hived.daemon"]
    graph = {"hived.admin": {"hived.daemon"}, "hived.daemon": {"hived.admin"}, "hived": set()}
    assert import_cycle(graph) == ["hived.admin", "hived.daemon", "hived.admin"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None


# DESIGN §9: the server's calls into the WebSocket library stay in one module, so that its
# transport can be swapped without touching the rest. (The client library is built on
# trio-websocket throughout: hived.client is left out.)
WEBSOCKET_LIBRARIES: Final = ("trio_websocket", "wsproto")
SERVER_TRANSPORT: Final = "hived.server.ws"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_only_the_server_transport_imports_the_websocket_library(path: Path) -> None:
    name = module_name(path)
    if name == SERVER_TRANSPORT or name == "hived.client" or name.startswith("hived.client."):
        return
    imported = runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
    used = sorted({i for i in imported if i.split(".")[0] in WEBSOCKET_LIBRARIES})
    assert not used, f"{name} imports {used}: keep WebSocket library calls in {SERVER_TRANSPORT}"
