"""Build keel, compiling the per-bar modules (``MODULES`` in src/compiled_modules.py) with mypyc.

Everything else about the package is in pyproject.toml. The compiled copies
need a C compiler; without one (or with ``KEEL_COMPILE=0``) keel installs as
pure Python and runs the same code from its ``.py`` files, slower. Beside the
copies the build writes src/compiled_sources.json, the SHA-256 of each source
it compiled, so that keel can tell a compiled copy from an edited source.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "src"
MANIFEST = SOURCES / "compiled_sources.json"
# mypyc names a module after its path: the sources are compiled through a `keel` link to src/.
LINKED = Path("build/mypyc-sources")
# pip asks for the metadata in a run of its own: mypyc's type check and C generation (~45 s) wait for the build.
METADATA_ONLY = {"egg_info", "dist_info"}


def compiled_modules() -> list[str]:
    """Read MODULES from src/compiled_modules.py (keel itself cannot be imported before it is built)."""
    tree = ast.parse((SOURCES / "compiled_modules.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "MODULES":
            assert node.value is not None
            return list(ast.literal_eval(node.value))
    raise SystemExit("src/compiled_modules.py defines no MODULES")


def extensions() -> list[Extension]:
    """Return the mypyc extensions, or none when compiling is off or impossible (keel then runs as Python)."""
    if METADATA_ONLY & set(sys.argv[1:]):
        return []
    MANIFEST.unlink(missing_ok=True)
    if os.environ.get("KEEL_COMPILE", "1") == "0":
        return []
    compiler = os.environ.get("CC", "cc").split()[0]
    if shutil.which(compiler) is None:
        print(f"keel: no C compiler ({compiler}); installing without compiled modules", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        # An isolated build has no mypy, nor the packages mypyc type-checks keel against (see the Makefile).
        print("keel: mypyc is not installed here; installing without compiled modules", file=sys.stderr)
        return []
    os.chdir(ROOT)
    LINKED.mkdir(parents=True, exist_ok=True)
    link = LINKED / "keel"
    if not link.is_symlink():
        link.symlink_to(SOURCES, target_is_directory=True)
    modules = compiled_modules()
    paths = [str(link.joinpath(*module.split(".")).with_suffix(".py")) for module in modules]
    built = mypycify(
        ["--config-file", "pyproject.toml", "--no-warn-unused-configs", *paths],
        group_name="keel._native",
        target_dir="build/mypyc",
    )
    digests = {
        module: hashlib.sha256((SOURCES / module.replace(".", "/")).with_suffix(".py").read_bytes()).hexdigest()
        for module in modules
    }
    MANIFEST.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    return built


setup(ext_modules=extensions())
