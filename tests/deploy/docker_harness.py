"""Docker for the deploy tests: the daemon, a base image made without Docker Hub, and keel's image.

These machines reach only loopback and the package registries: dockerd runs
with ``--bridge=none`` (no 172.17.x bridge, no iptables rules), images build
with ``--network host`` and containers run with ``--network host``. Docker Hub
is not reachable, so the base image is Debian bookworm bootstrapped with
debootstrap from the mirror apt already uses and imported with
``docker import``. Both images are tagged with a hash of what they are made
from, so a rerun with nothing changed reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("KEEL_DOCKER_TEST_DIR", "/var/lib/keel-docker-test"))
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What the image is built from; a change to any of these makes a new image.
IMAGE_INPUTS = ("pyproject.toml", "README.md", "src", "config", "data", "deploy/keel.yaml", "deploy/Dockerfile")
DAEMON_TIMEOUT_SECONDS = 60.0


class DockerUnavailableError(RuntimeError):
    """Docker cannot be installed or started here."""


@dataclass(frozen=True)
class BuiltImage:
    """keel's image: its tag, size, and how long building it took (0 when reused)."""

    tag: str
    base: str
    size_bytes: int
    build_seconds: float
    reused: bool


def docker(*arguments: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """Run the docker client; raise with its stderr when it fails and ``check``."""
    result = subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(arguments[:3])} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def ensure_daemon() -> None:
    """Install Docker when missing and start dockerd (no bridge) when it is not running."""
    if shutil.which("dockerd") is None or shutil.which("debootstrap") is None:
        subprocess.run([str(ROOT / "scripts" / "ensure-system-packages")], check=True)
    if _daemon_answers():
        return
    if os.geteuid() != 0:
        raise DockerUnavailableError("dockerd is not running and starting it needs root")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "dockerd.log", "ab") as log:
        subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip6tables=false"],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + DAEMON_TIMEOUT_SECONDS
    while not _daemon_answers():
        if time.monotonic() > deadline:
            raise DockerUnavailableError(f"dockerd did not answer within {DAEMON_TIMEOUT_SECONDS:g} s; see {log.name}")
        time.sleep(0.5)


def _daemon_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30).returncode == 0


def debian_mirror(sources: tuple[Path, ...] | None = None) -> str:
    """Return the Debian mirror apt uses for the main suite, read from /etc/apt/sources.list*."""
    if sources is None:
        sources = (Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*")))
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        mirror = _mirror_in(text, deb822=path.suffix == ".sources")
        if mirror is not None:
            return mirror
    raise DockerUnavailableError("no Debian mirror for the main suite in /etc/apt/sources.list*")


def _mirror_in(text: str, *, deb822: bool) -> str | None:
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, flags=re.MULTILINE))
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites:
                return fields["URIs"].split()[0].rstrip("/")
        return None
    for line in text.splitlines():
        parts = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
            return parts[1].rstrip("/")
    return None


def ensure_base_image() -> str:
    """Return the tag of a Debian bookworm image with python3, made by debootstrap when not yet made."""
    mirror = debian_mirror()
    key = hashlib.sha256(json.dumps([SUITE, BASE_PACKAGES, mirror]).encode()).hexdigest()[:12]
    tag = f"keel-test-base:{SUITE}-{key}"
    if _image_exists(tag):
        return tag
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=STATE_DIR, prefix="rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                mirror,
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        archive = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", tag], stdin=archive.stdout, check=True, capture_output=True)
        archive.wait()
    return tag


def ensure_keel_image(base: str) -> BuiltImage:
    """Return keel's image built on ``base`` from the working tree, building it when its inputs changed."""
    digest = hashlib.sha256(docker("image", "inspect", "--format", "{{.Id}}", base).stdout.encode())
    for path in _input_files():
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    tag = f"keel-test:{digest.hexdigest()[:12]}"
    reused = _image_exists(tag)
    started = time.monotonic()
    if not reused:
        subprocess.run(
            [str(ROOT / "deploy" / "build-image"), "--build-arg", f"BASE={base}", "-t", tag],
            check=True,
            capture_output=True,
            timeout=1500,
        )
        _remove_other_tags("keel-test", keep=tag)
    seconds = 0.0 if reused else time.monotonic() - started
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    return BuiltImage(tag=tag, base=base, size_bytes=size, build_seconds=seconds, reused=reused)


def _input_files() -> list[Path]:
    files: list[Path] = []
    for name in IMAGE_INPUTS:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        else:
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts)
    return files


def _remove_other_tags(repository: str, keep: str) -> None:
    """Remove the images of ``repository`` other than ``keep``: each change of the code builds a new one."""
    tags = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
    for tag in tags:
        if tag != keep:
            docker("rmi", tag, check=False)


def _image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0
