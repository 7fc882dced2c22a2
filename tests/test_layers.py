"""The package's layers (docs/design.md, "Boundaries"): the building blocks never import what runs an experiment,
nothing imports the façade, and no two modules import each other through any chain (function-level imports
included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mu_lightning"
BLOCKS = ("data", "models", "stages", "unlearners", "metrics")  # know nothing of how a run is put together
ABOVE_BLOCKS = ("pipeline", "outputs", "api", "cli", "eval_cli", "cache", "runtime", "tracking", "tuning",
                "callbacks")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, anywhere in its body."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name, targets = module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mu_lightning"):
                targets |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("mu_lightning")}
        found[name] = targets
    return {m: {t for t in ts if t in found and t != m} for m, ts in found.items()}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_building_blocks_import_nothing_above_them():
    wrong = sorted((m, t) for m, ts in imports().items() if top(m) in BLOCKS for t in ts if top(t) in ABOVE_BLOCKS)
    assert not wrong, f"building blocks importing what runs an experiment: {wrong}"


def test_nothing_imports_the_facade():
    users = sorted(m for m, ts in imports().items() if "mu_lightning.api" in ts and m != "mu_lightning")
    assert not users, f"mu_lightning.api is the façade on top; imported by {users}"


def test_no_import_circle():
    graph = imports()
    graph = {m: {t for t in ts if not m.startswith(f"{t}.")} for m, ts in graph.items()}  # a package's own __init__
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*path, m, t]
            if t not in state and (circle := visit(t, [*path, m])):
                return circle
        state[m] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module, [])
            assert circle is None, f"import circle: {' -> '.join(circle)}"


def test_no_module_over_the_size_limit():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split by job, docs/design.md 'Boundaries'): {long}"
