"""The package's layers: ``core`` and ``envs`` import nothing else of pyro_gem; ``rl`` (policy,
sampler, advantages) builds on ``core`` and ``envs``; ``methods`` and ``evaluation`` on ``core``
and ``rl``; ``tasks`` on ``core``, ``evaluation`` (its metrics) and ``rl``; the runners on top may
use everything. No module imports itself back through another."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_gem"

#: layer -> the layers it may import (itself included).
ALLOWED = {
    "core": {"core"},
    "envs": {"envs"},
    "rl": {"core", "envs", "rl"},
    "methods": {"core", "rl", "methods"},
    "evaluation": {"core", "rl", "evaluation"},
    "tasks": {"core", "evaluation", "rl", "tasks"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[_module_name(path)] = {m for m in found if m.split(".")[0] == "pyro_gem"}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "top"


def test_each_layer_imports_only_the_layers_below_it():
    for module, imported in _imports().items():
        layer = _layer(module)
        if layer == "top":
            continue
        for target in imported:
            assert _layer(target) in ALLOWED[layer], f"{module} ({layer}) imports {target}"


def test_the_import_graph_has_no_cycles():
    graph = _imports()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join(path + [module])
        state[module] = "open"
        for target in graph.get(module, ()):
            if target != "pyro_gem":  # only the package's public face imports everything
                visit(target, path + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


def test_the_public_imports_keep_working():
    import pyro_gem

    for name in pyro_gem.__all__:
        assert getattr(pyro_gem, name) is not None
    from pyro_gem import GEMBML, GaussianPrior, InnerVI, Sinusoid, TaskBatch  # noqa: F401
    from pyro_gem.tasks import Sinusoid as S  # noqa: F401  (models/sinusoid.py's import)
