"""The import direction of DESIGN.md: a layer imports only the layers to its left.

``core`` <- ``market_data`` <- ``strategy_engine`` <- ``portfolio`` <-
``risk_management`` <- ``execution`` <- ``integration``; adapters (``api``)
depend on ``core`` and ``market_data``; ``persistence`` on ``core``; ``config`` on
``core`` and the strategies (their parameter spaces); ``backtest``, ``optimization``, ``web``,
``notifications``, ``operations`` and ``cli`` sit on top. ``compiled_modules``
imports no layer; the package's ``__init__`` imports only it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

CHAIN = ("core", "market_data", "strategy_engine", "portfolio", "risk_management", "execution")
_INTEGRATION = {*CHAIN, "api", "persistence", "config", "integration"}
ALLOWED: dict[str, set[str]] = {
    **{layer: set(CHAIN[: i + 1]) for i, layer in enumerate(CHAIN)},
    "api": {"core", "market_data", "api"},
    "persistence": {"core", "persistence"},
    "config": {"core", "market_data", "strategy_engine", "config"},
    "integration": _INTEGRATION,
    "backtest": {*_INTEGRATION, "backtest"},
    "optimization": {*_INTEGRATION, "backtest", "optimization"},
    "web": {*_INTEGRATION, "backtest", "optimization", "web"},
    "notifications": {*_INTEGRATION, "notifications"},
    "operations": {"core", "integration", "operations"},
    "cli": {*_INTEGRATION, "backtest", "optimization", "web", "notifications", "operations", "cli"},
    # The package root chooses compiled or source copies of the per-bar modules before any layer is imported.
    "compiled_modules": set(),
    "__init__": {"compiled_modules"},
}


def layer_of(path: Path, root: Path) -> str:
    """Return the layer a source file belongs to: its top folder, or its module name at the top."""
    relative = path.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_layers(path: Path, root: Path) -> list[tuple[int, str]]:
    """Return (line, layer) for every keel import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(("keel", *base, *(node.module.split(".") if node.module else ())))
            else:
                module = node.module or ""
            names = [module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "keel" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def violations(root: Path) -> list[str]:
    """Return every import that points against the layer order, as ``file:line: a -> b``."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        layer = layer_of(path, root)
        allowed = ALLOWED.get(layer)
        if allowed is None:
            problems.append(f"{path.relative_to(root)}: layer {layer!r} is not in the layer table")
            continue
        for line, target in imported_layers(path, root):
            if target not in allowed:
                problems.append(f"{path.relative_to(root)}:{line}: {layer} imports {target}")
    return problems


def test_imports_follow_the_layer_order() -> None:
    # Arrange
    root = SOURCE

    # Act
    problems = violations(root)

    # Assert
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("core/bad.py", "from keel.execution import OrderManager\n", "core/bad.py:1: core imports execution"),
        (
            "strategy_engine/bad.py",
            "import keel.risk_management.risk_controller\n",
            "strategy_engine imports risk_management",
        ),
        ("market_data/bad.py", "from ..api import simulated_exchange\n", "market_data imports api"),
        ("portfolio/ok.py", "from keel.strategy_engine import BaseStrategy\n", None),
    ],
)
def test_checker_catches_an_import_against_the_order(
    tmp_path: Path, module: str, source: str, expected: str | None
) -> None:
    # Arrange
    target = tmp_path / module
    target.parent.mkdir(parents=True)
    target.write_text(source)

    # Act
    problems = violations(tmp_path)

    # Assert
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0]
