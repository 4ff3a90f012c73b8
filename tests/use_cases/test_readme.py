"""The README's strategy guide and execution-engine example run as they are written, with the results it says."""

from __future__ import annotations

import ast
import asyncio
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest

from keel.core.messages import ExecutionCompleted
from keel.integration import TradingOrchestrator

ROOT = Path(__file__).resolve().parents[2]


def guide_code(heading: str = "### Writing a strategy") -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_strategy_guide_runs_as_written_and_is_no_fee_bonfire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Arrange
    code = guide_code()
    namespace: dict[str, object] = {"__name__": "guide"}
    previous = Path.cwd()

    # Act
    os.chdir(ROOT)
    try:
        exec(compile(code.replace('"runs/donchian"', repr(str(tmp_path / "donchian"))), "README.md", "exec"), namespace)
    finally:
        os.chdir(previous)

    # Assert
    results = namespace["results"]
    assert capsys.readouterr().out.strip().endswith("0.12% 0.50 0.97%")
    assert results["n_trades"] == 46 and round(results["fees_paid"], 2) == 4.97
    assert results["fees_paid"] < 0.01 * 10_000
    assert (tmp_path / "donchian" / "report.html").exists()


def test_the_execution_engine_example_runs_as_written_on_a_running_paper_system(tmp_path: Path) -> None:
    # Arrange
    code = compile(
        guide_code("Trading by hand through the execution engine"),
        "README.md",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    orchestrator = TradingOrchestrator.from_config(
        mode="paper",
        run={"output_dir": str(tmp_path)},
        data={"symbols": ["ETHUSDT"]},
        paper={"speed": 100_000, "status_interval_seconds": 3600},
        web={"enabled": False},
    )

    async def notebook() -> dict[str, object]:
        async with orchestrator:
            while orchestrator.pipeline.recorder.equity == []:
                await asyncio.sleep(0.01)
            namespace: dict[str, object] = {"orchestrator": orchestrator}
            await eval(code, namespace)
        return namespace

    # Act
    namespace = asyncio.run(asyncio.wait_for(notebook(), timeout=300))

    # Assert: the last call's analysis, filled
    result = namespace["result"]
    assert isinstance(result, ExecutionCompleted)
    assert (result.style, result.symbol, result.filled_quantity) == ("ADAPTIVE", "ETHUSDT", Decimal("0.50"))
