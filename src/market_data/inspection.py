"""Check recorded market-data files and describe what the loaders found.

:func:`inspect_paths` loads every file it is given (or finds under a folder)
with :func:`~keel.market_data.loaders.load_any`; :func:`render_report` turns
one :class:`~keel.market_data.loaders.LoadReport` into a short text block for
a terminal, such as the output of ``keel data inspect``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keel.core.errors import MalformedDataError
from keel.market_data.loaders import Gap, LoadReport, load_any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class UnreadableFile:
    """A file ``inspect_all`` could not read at all, with the reason."""

    path: str
    reason: str


def inspect_all(paths: Sequence[str | Path]) -> list[LoadReport | UnreadableFile]:
    """Load every file; a file that cannot be read is reported and the rest still loaded.

    Parameters
    ----------
    paths
        Files, or folders standing for every ``*.csv.gz`` file below them
        (in sorted order), in the order given.

    Returns
    -------
    list of LoadReport or UnreadableFile
        One entry per file, in order.
    """
    results: list[LoadReport | UnreadableFile] = []
    for file in _expand(paths):
        try:
            results.append(load_any(file).report)
        except (MalformedDataError, OSError) as error:
            results.append(UnreadableFile(str(file.resolve()), str(error)))
    return results


def inspect_paths(paths: Sequence[str | Path]) -> list[LoadReport]:
    """Load files and return their load reports.

    Parameters
    ----------
    paths
        Files, or folders standing for every ``*.csv.gz`` file below them
        (in sorted order), in the order given.

    Returns
    -------
    list of LoadReport
        One report per file.

    Raises
    ------
    MalformedDataError
        At the first file that cannot be read at all.
    """
    return [load_any(file).report for file in _expand(paths)]


def render_report(report: LoadReport, max_listed: int = 5) -> str:
    """Describe a load report in a few lines of text.

    Parameters
    ----------
    report
        The report to describe.
    max_listed
        How many gaps and how many bad rows to list; the rest are counted.

    Returns
    -------
    str
        The file's path, then indented lines: kind, rows read and kept, time
        span (UTC, ISO 8601), symbols, empty optional fields, gaps and bad
        rows (``file:line: reason``).
    """
    lines = [
        report.path,
        f"  kind: {report.kind}",
        f"  rows: {report.rows_read} read, {report.rows_kept} kept",
        f"  span: {_span(report)}",
        f"  symbols: {', '.join(report.symbols) or '-'}",
    ]
    if report.empty_optional_fields:
        counts = ", ".join(f"{field} {count}" for field, count in report.empty_optional_fields)
        lines.append(f"  empty optional fields: {counts}")
    lines.append(f"  gaps: {len(report.gaps)}")
    lines.extend(_listed([_describe_gap(gap) for gap in report.gaps], max_listed))
    lines.append(f"  bad rows: {len(report.bad_rows)}")
    lines.extend(
        _listed(
            [f"{row.file}:{row.line}: {row.reason}" for row in report.bad_rows],
            max_listed,
        )
    )
    return "\n".join(lines)


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.rglob("*.csv.gz")) if path.is_dir() else [path])
    return files


def _iso(time_ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=time_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{time_ms % 1000:03d}Z"


def _span(report: LoadReport) -> str:
    if report.first_ms is None or report.last_ms is None:
        return "-"
    return f"{_iso(report.first_ms)} .. {_iso(report.last_ms)}"


def _describe_gap(gap: Gap) -> str:
    bars = "bar" if gap.missing_bars == 1 else "bars"
    span = f"{_iso(gap.start_ms)} .. {_iso(gap.end_ms)}"
    return f"{gap.symbol} {span}: {gap.missing_bars} missing {bars}"


def _listed(entries: list[str], max_listed: int) -> list[str]:
    shown = [f"    {entry}" for entry in entries[:max_listed]]
    if len(entries) > max_listed:
        shown.append(f"    ... and {len(entries) - max_listed} more")
    return shown
