"""The deploy tests' base image comes from the Debian mirror apt already uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker_harness import DockerUnavailableError, debian_mirror

DEB822 = """Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example/debian/ http://other.example/debian
Suites: bookworm bookworm-updates
Components: main
"""


def test_the_mirror_is_read_from_a_deb822_sources_file(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(DEB822)

    assert debian_mirror((sources,)) == "http://mirror.example/debian"


def test_the_mirror_is_read_from_a_one_line_sources_list(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://packages.example/apt cloud-sdk main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main contrib\n"
    )

    assert debian_mirror((listing,)) == "http://mirror.example/debian"


def test_no_bookworm_mirror_is_a_clear_error(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text("deb http://mirror.example/debian trixie main\n")

    with pytest.raises(DockerUnavailableError, match="no Debian mirror"):
        debian_mirror((listing, tmp_path / "missing.list"))
