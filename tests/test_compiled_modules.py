"""Per-bar modules run compiled when the copies match their sources, from source otherwise, with the same results."""

from __future__ import annotations

import abc
import enum
import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.compiled_modules import (
    MANIFEST,
    MODULES,
    PACKAGE_ROOT,
    PURE_PYTHON_VARIABLE,
    SourceFinder,
    choose_copies,
    compiled_copies,
    source_digests,
    source_path,
    stale_sources,
)

IDENTICAL_ORDERS = Path(__file__).resolve().parent / "backtest"


def package_copy(root: Path, *, compiled: bool) -> Path:
    """Write the sources of MODULES under ``root`` (and an empty 'compiled copy' of the first), with no manifest."""
    for module in MODULES:
        target = source_path(module, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source_path(module).read_bytes())
    if compiled:
        first = source_path(MODULES[0], root)
        first.with_name(first.stem + importlib.machinery.EXTENSION_SUFFIXES[0]).write_bytes(b"")
    return root


def record_manifest(root: Path) -> None:
    (root / MANIFEST).write_text(json.dumps(source_digests(root=root)))


def test_an_edited_source_is_stale_and_without_a_manifest_every_source_is(tmp_path: Path) -> None:
    # Arrange
    root = package_copy(tmp_path, compiled=True)
    unrecorded = stale_sources(root)
    record_manifest(root)
    fresh = stale_sources(root)
    edited = source_path("portfolio.attribution", root)

    # Act
    edited.write_text(edited.read_text() + "\n# an edit\n")

    # Assert
    assert unrecorded == list(MODULES)
    assert fresh == []
    assert stale_sources(root) == ["portfolio.attribution"]


def test_the_source_finder_imports_only_the_compiled_modules_and_from_their_python_files() -> None:
    # Arrange
    finder = SourceFinder()

    # Act
    bus = finder.find_spec("keel.core.bus", None)
    config = finder.find_spec("keel.config", None)

    # Assert
    assert bus is not None and bus.origin == str(PACKAGE_ROOT / "core" / "bus.py")
    assert config is None


def test_fresh_copies_run_and_nothing_is_put_before_them(tmp_path: Path) -> None:
    # Arrange
    root = package_copy(tmp_path, compiled=True)
    record_manifest(root)
    meta_path: list[object] = []

    # Act
    chosen = choose_copies(root, environ={}, meta_path=meta_path)

    # Assert
    assert chosen is True
    assert meta_path == []


def test_a_stale_copy_sends_every_module_to_its_source_with_a_warning(tmp_path: Path) -> None:
    # Arrange
    root = package_copy(tmp_path, compiled=True)
    record_manifest(root)
    edited = source_path("core.costs", root)
    edited.write_text(edited.read_text() + "\n# an edit\n")
    meta_path: list[object] = []

    # Act
    with pytest.warns(UserWarning, match=r"core/costs\.py changed since it was compiled.*make compile"):
        chosen = choose_copies(root, environ={}, meta_path=meta_path)

    # Assert
    assert chosen is False
    assert len(meta_path) == 1 and isinstance(meta_path[0], SourceFinder)
    assert set(meta_path[0].sources) == {f"keel.{module}" for module in MODULES}


def test_pure_python_is_chosen_on_request_and_without_copies(tmp_path: Path) -> None:
    # Arrange
    with_copies = package_copy(tmp_path / "compiled", compiled=True)
    record_manifest(with_copies)
    without = package_copy(tmp_path / "pure", compiled=False)
    requested: list[object] = []
    absent: list[object] = []

    # Act
    on_request = choose_copies(with_copies, environ={PURE_PYTHON_VARIABLE: "1"}, meta_path=requested)
    no_copies = choose_copies(without, environ={}, meta_path=absent)

    # Assert
    assert on_request is False and len(requested) == 1
    assert no_copies is False and absent == []


def test_no_compiled_class_shares_the_registry_of_an_abstract_base() -> None:
    # Arrange: a class mypyc compiles on an ABC has no _abc_impl of its own, so isinstance asks its base's registry
    classes = [
        cls
        for module in MODULES
        for cls in vars(importlib.import_module(f"keel.{module}")).values()
        if isinstance(cls, abc.ABCMeta) and cls.__module__ == f"keel.{module}"
    ]

    # Act
    shared = [cls.__qualname__ for cls in classes if "_abc_impl" not in cls.__dict__]

    # Assert
    assert shared == []


def test_every_public_class_of_a_compiled_module_takes_python_subclasses() -> None:
    # Arrange: users subclass the components (a risk check of their own, a bus that records); mypyc refuses an
    # interpreted subclass of a compiled class unless the class allows it (mypyc_attr)
    classes = [
        cls
        for module in MODULES
        for name, cls in vars(importlib.import_module(f"keel.{module}")).items()
        if isinstance(cls, type)
        and cls.__module__ == f"keel.{module}"
        and not name.startswith("_")
        and not issubclass(cls, enum.Enum)
    ]
    refused = []

    # Act
    for cls in classes:
        subclass = type(f"Custom{cls.__name__}", (cls,), {})
        try:
            subclass.__new__(subclass)
        except TypeError as error:
            refused.append(f"{cls.__module__}.{cls.__qualname__}: {error}")

    # Assert
    assert len(classes) > 20
    assert refused == []


@pytest.mark.skipif(
    os.environ.get("KEEL_COMPILE") == "0" or bool(os.environ.get(PURE_PYTHON_VARIABLE)),
    reason="this install or run asked for pure Python",
)
def test_this_install_runs_every_per_bar_module_compiled() -> None:
    # Assert: `make` compiles them; after an edit, `make test` and `make compile` rebuild them
    assert len(compiled_copies()) == len(MODULES), "run `make compile`"
    assert stale_sources() == [], "run `make compile`"
    assert keel.COMPILED
    assert not sys.modules["keel.core.bus"].__file__.endswith(".py")


@pytest.mark.parametrize("case", ["moving_average_cross_btcusdt_month", "default_pipeline_10_symbols_10_days"])
def test_the_python_sources_place_the_golden_orders_the_compiled_modules_place(case: str, tmp_path: Path) -> None:
    # Arrange: tests/backtest/test_identical_orders.py checks this run's (compiled) modules against the same prints
    script = (
        "import json, sys; from pathlib import Path; import keel;"
        f"sys.path.insert(0, {str(IDENTICAL_ORDERS)!r});"
        "from test_identical_orders import CASES, fingerprint;"
        "folder = Path(sys.argv[1]);"
        f"print(json.dumps({{'compiled': keel.COMPILED, 'prints': fingerprint(CASES[{case!r}], folder)}}))"
    )
    golden = json.loads((IDENTICAL_ORDERS / "golden_orders.json").read_text())[case]

    # Act
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env={**os.environ, PURE_PYTHON_VARIABLE: "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    observed = json.loads(completed.stdout.strip().splitlines()[-1])

    # Assert
    assert observed["compiled"] is False
    assert observed["prints"] == golden
