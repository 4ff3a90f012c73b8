"""The README's strategy guide runs as it is written, and its result is what the README says."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def guide_code() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Writing a strategy", 1)[1]
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
