"""The package's layering, checked on its import graph (every import statement, including the
ones inside functions and under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mindtrace_kombu"

#: The asyncio API's modules: above the Orchestrator, which they delegate to.
ASYNC_API = ["aio", "aio.orchestrator", "aio.batching", "aio.claim", "aio.handoff", "aio.offload", "aio.worker"]
#: Modules that reach the broker only through the backend seam.
ON_THE_SEAM = ["core", "orchestrator", "worker", "dead_letters", "celery", *ASYNC_API]
#: What they may not import: backend implementations, the store, the Kombu transports.
BEHIND_THE_SEAM = ("transport.redis", "transport.memory", "transport.amqp", "transport.sentinel", "transport.base",
                   "redis_store", "backends.redis", "backends.memory", "backends.amqp",
                   "results.memory", "results.redis", "results.sql")
#: Modules below the clients, which may use the result-store protocol but not choose a store.
#: Modules that know the result-store protocol alone: the store is chosen where clients are known
#: (the Orchestrator, and the Celery bridge for the job tasks it defines).
PROTOCOL_ONLY = ["core", "worker", "recording", "dead_letters", "execution", "process_pool"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Package-relative names of the package's modules that ``path`` imports."""
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("mindtrace_kombu"):
                target = node.module.removeprefix("mindtrace_kombu").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}".strip(".")
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("mindtrace_kombu.") for a in node.names if a.name.startswith("mindtrace_kombu.")}
    return {name for name in found if name in MODULES and name != module_name(path)}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycles() -> None:
    """Given every module of the package, expect no import cycle (a package importing its own
    submodules, as ``__init__`` files do, is a tree edge, not a cycle)."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if name and target.startswith(f"{name}.") or not name:
                continue  # a package importing its own submodules
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target] if target in path else [name, target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("module", ON_THE_SEAM)
def test_callers_reach_the_broker_through_the_seam_alone(module: str) -> None:
    """The Orchestrator, Worker, dead letters and Celery bridge import no backend, store or
    transport implementation."""
    assert {name for name in GRAPH[module] if name.startswith(BEHIND_THE_SEAM)} == set()


def test_the_redis_store_is_kombu_free() -> None:
    """The Redis store imports neither Kombu nor the rest of the package's Kombu-facing parts."""
    for name, path in MODULES.items():
        if name.startswith("redis_store"):
            source = path.read_text()
            assert "import kombu" not in source and "from kombu" not in source, name
            assert all(target.startswith(("redis_store", "errors", "queues")) for target in GRAPH[name]), name


@pytest.mark.parametrize("module", PROTOCOL_ONLY)
def test_only_the_orchestrator_and_the_bridge_choose_a_result_store(module: str) -> None:
    """The core and the Worker know the result-store protocol (``results.base``) alone; the
    store is chosen by URL (``results.urls``, which needs the clients) in the Orchestrator and
    in the Celery bridge."""
    assert {name for name in GRAPH[module] if name.startswith("results")} <= {"results.base"}


def test_result_stores_sit_behind_the_protocol() -> None:
    """The stores import the protocol, the Redis store and the seam's types, never the
    Orchestrator, the Worker or the core."""
    for name in GRAPH:
        if name.startswith("results.") and name != "results.urls":
            assert not GRAPH[name] & {"orchestrator", "worker", "core", "clients", "celery"}, name


def test_nothing_below_the_asyncio_api_imports_it() -> None:
    """``aio/`` sits above ``orchestrator.py``: only its own modules and the package's lazy
    exports import it."""
    importers = {name for name, targets in GRAPH.items() if any(t.split(".")[0] == "aio" for t in targets)}
    assert importers <= {"", *ASYNC_API}
    assert set(ASYNC_API) == {name for name in MODULES if name.split(".")[0] == "aio"}
