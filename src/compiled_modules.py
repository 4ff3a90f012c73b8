"""The modules on a backtest's per-bar path that keel compiles to C, and which copy of them runs.

A bar in a backtest passes through about fifteen handlers and a hundred and
fifty Python calls; the interpreter's cost per call, not any one handler,
bounds the rate. ``setup.py`` compiles the modules in :data:`MODULES` with
mypyc when keel is installed with a C compiler at hand (``KEEL_COMPILE=0``
skips it). The ``.py`` files stay the source and the reference: the compiled
copies are built from them, and a test runs the same backtest both ways and
asserts identical results.

The build records each source's SHA-256 in ``compiled_sources.json``. At
import, keel uses the compiled copies only when every recorded digest still
matches its source; after an edit (or with ``KEEL_PURE_PYTHON=1``) every
module in :data:`MODULES` is imported from its ``.py`` file instead. All or
none: compiled modules call each other directly, so a stale one would keep
running its old code beside the edited one.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

MODULES: tuple[str, ...] = (
    "core.floats",
    "core.bus",
    "core.costs",
    "strategy_engine.indicators",
    "strategy_engine.symbol_history",
    "strategy_engine.performance",
    "strategy_engine.manager",
    "strategy_engine.runner",
    "risk_management.position_manager",
    "risk_management.risk_controller",
    "api.matching",
    "portfolio.returns",
    "portfolio.attribution",
    "integration.run_recorder",
    "integration.replay",
    "market_data.feed_health",
    "market_data.recorded_events",
    "execution.ladder_executor",
    "api.account",
    "api.simulated_exchange",
    "core.clock",
)
"""The compiled modules, relative to the ``keel`` package.

Left out on purpose, as mypyc changes what they promise: ``strategy_engine.base``
(users subclass its strategy and state classes in Python, with ``__slots__``,
and its signals are pickled to the fit worker: mypyc's classes allow neither),
``strategy_engine.history`` (a compiled subclass of an ABC shares its base's
registry: ``isinstance(a_dict, MarketData)`` came out True, as ``Mapping`` knows ``dict``;
the columns behind that view are compiled, in ``strategy_engine.symbol_history``),
and ``execution.router`` (its public calls check their arguments and name what
is wrong; compiled, a float quantity stopped at mypyc's own type check with
"int object expected; got float"). Modules that define msgspec structs cannot
be compiled (mypyc drops ``frozen`` and ``kw_only``: the risk watch's structs
live in ``risk_management.measures`` so that ``risk_controller`` can be, and the
simulated venue's and its account's in ``api.venue_state``, the clock's ``TimeEvent`` in
``core.time_events``), nor
``market_data.feeds`` (async generators). A public call of a compiled module
that validates its arguments takes them as ``object`` (mypyc would convert
``True`` to ``1.0`` for a ``float`` parameter before the check). Every public
class of a compiled module carries ``mypyc_attr(allow_interpreted_subclasses=True)``:
users subclass them in Python. A module added here must pass the whole suite
compiled.
"""

MANIFEST = "compiled_sources.json"
"""The build's record of the sources it compiled: ``{module: sha256 of its .py file}``."""

PURE_PYTHON_VARIABLE = "KEEL_PURE_PYTHON"
"""Set to 1 to run every module from its Python source even when compiled copies are fresh."""

PACKAGE_ROOT = Path(__file__).resolve().parent


def source_path(module: str, root: Path = PACKAGE_ROOT) -> Path:
    """Return the ``.py`` file of ``module`` (a name from :data:`MODULES`) under the package root."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_digests(modules: Sequence[str] = MODULES, root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """Return the SHA-256 of each module's source, as the build records them."""
    return {module: hashlib.sha256(source_path(module, root).read_bytes()).hexdigest() for module in modules}


def compiled_copies(root: Path = PACKAGE_ROOT) -> list[Path]:
    """Return the compiled extension files present for :data:`MODULES`."""
    found = []
    for module in MODULES:
        source = source_path(module, root)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = source.with_name(source.stem + suffix)
            if candidate.exists():
                found.append(candidate)
    return found


def stale_sources(root: Path = PACKAGE_ROOT) -> list[str]:
    """Return the modules whose source differs from what the build compiled (all of them without a record)."""
    manifest = root / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return list(MODULES)
    current = source_digests(root=root)
    return [module for module in MODULES if recorded.get(module) != current[module]]


class SourceFinder(importlib.abc.MetaPathFinder):
    """Import the modules of :data:`MODULES` from their ``.py`` files, ahead of any compiled copy."""

    def __init__(self, root: Path = PACKAGE_ROOT) -> None:
        self.sources = {f"keel.{module}": source_path(module, root) for module in MODULES}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """Return a source spec for a module of :data:`MODULES`, None for any other."""
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def choose_copies(
    root: Path = PACKAGE_ROOT,
    environ: Mapping[str, str] = os.environ,
    meta_path: list[Any] = sys.meta_path,
) -> bool:
    """Decide, once at ``import keel``, whether the compiled copies run; return True when they do.

    When they do not but exist, put a :class:`SourceFinder` first on ``meta_path``
    (with a warning when it is because a source changed since the build).
    """
    if not compiled_copies(root):
        return False
    if environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0"):
        meta_path.insert(0, SourceFinder(root))
        return False
    stale = stale_sources(root)
    if stale:
        meta_path.insert(0, SourceFinder(root))
        warnings.warn(
            f"keel: {source_path(stale[0], root)} changed since it was compiled (and {len(stale) - 1} more);"
            " running the compiled modules from their Python sources, correct but slower."
            " Rebuild them with `make compile`.",
            stacklevel=2,
        )
        return False
    return True


if __name__ == "__main__":
    # The Makefile's list of what a rebuild depends on: the sources, relative to the repository.
    print(" ".join(str(source_path(module).relative_to(PACKAGE_ROOT.parent)) for module in MODULES))
