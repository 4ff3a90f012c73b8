"""Where a backtest spends its time: a sampling profile of the run, written next to its outputs.

``keel backtest --profile`` runs the backtest under pyinstrument's
statistical profiler (a stack sample every millisecond, a few per cent of
overhead) and writes two views of the same samples into the run's folder:

- ``profile.html``: a self-contained page (no network) with the call tree,
  heaviest first;
- ``profile.speedscope.json``: every sample in speedscope's format, for
  https://www.speedscope.app or the ``speedscope`` command (flame graphs,
  time order). Nothing is filtered out: a backtest's time is spread over many
  short calls (a strategy's step on each bar), and pyinstrument's default
  filter, which drops every call under 1 % of the run, would drop them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyinstrument import Profiler
from pyinstrument.renderers import HTMLRenderer, SpeedscopeRenderer
from pyinstrument.session import Session

PROFILE_FILES = ("profile.html", "profile.speedscope.json")
SAMPLE_INTERVAL_SECONDS = 0.001

T = TypeVar("T")


def profiled(run: Callable[[], T]) -> tuple[T, Session]:
    """Call ``run`` under the sampling profiler; return its result and the recorded session."""
    profiler = Profiler(interval=SAMPLE_INTERVAL_SECONDS, async_mode="disabled")
    profiler.start()
    try:
        result = run()
    finally:
        session = profiler.stop()
    return result, session


def write_profile(folder: Path, session: Session) -> list[Path]:
    """Write ``profile.html`` and ``profile.speedscope.json`` of ``session`` into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    html, speedscope = (folder / name for name in PROFILE_FILES)
    html.write_text(HTMLRenderer().render(session), encoding="utf-8")
    speedscope.write_text(SpeedscopeRenderer(show_all=True).render(session), encoding="utf-8")
    return [html, speedscope]
