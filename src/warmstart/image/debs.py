"""Files out of Debian packages, without installing them: ``apt-get download`` (this machine's
apt sources and keys, so the package is verified) into a cache, then members read out of the
``.deb``'s data archive (``dpkg-deb --fsys-tarfile``).

The agent's image takes ``ctr`` from the ``containerd`` package and the CA bundle from
``ca-certificates`` this way: a 23 MB binary and a 0.2 MB bundle instead of the packages'
daemons, shims and maintainer scripts.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from warmstart.image.tools import BuildError, find_tool, run


@dataclass(frozen=True)
class DebFile:
    """One downloaded package: its name, version and verified ``.deb``."""

    package: str
    version: str
    path: Path


@dataclass(frozen=True)
class _Planned:
    filename: str
    size: int
    sha256: str


def parse_print_uris(text: str) -> list[_Planned]:
    """``apt-get download --print-uris``: ``'URI' FILE SIZE SHA256:HEX`` per package."""
    planned = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 4 or not words[0].startswith("'"):
            continue
        algorithm, _, digest = words[3].partition(":")
        if algorithm.upper() != "SHA256" or not digest:
            raise BuildError(f"apt-get gave no SHA256 for {words[1]}: {line.strip()!r}")
        planned.append(_Planned(words[1], int(words[2]), digest.lower()))
    return planned


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _field(deb: Path, name: str) -> str:
    return run([find_tool("dpkg-deb"), "--field", deb, name], what=f"dpkg-deb --field {deb.name}")


def download_debs(packages: Sequence[str], cache: Path) -> list[DebFile]:
    """The candidate version of each package, from ``cache`` when a file there has the SHA256
    apt expects, else downloaded into it by ``apt-get download``."""
    apt_get = find_tool("apt-get")
    cache.mkdir(parents=True, exist_ok=True)
    # --print-uris prints nothing for a file already in the working directory: ask elsewhere.
    with tempfile.TemporaryDirectory(prefix="warmstart-apt-") as empty:
        text = run(
            [apt_get, "download", "--print-uris", *packages],
            what=f"apt-get download --print-uris {' '.join(packages)}",
            cwd=Path(empty),
        )
    planned = parse_print_uris(text)
    if len(planned) != len(packages):
        raise BuildError(
            f"apt-get knows {len(planned)} of the packages {', '.join(packages)}: "
            "run `apt-get update`"
        )
    missing = [
        p
        for p in planned
        if not (cache / p.filename).is_file() or _sha256(cache / p.filename) != p.sha256
    ]
    if missing:
        run([apt_get, "download", *packages], what="apt-get download", cwd=cache)
    out = []
    for package, plan in zip(packages, planned, strict=True):
        path = cache / plan.filename
        if not path.is_file() or _sha256(path) != plan.sha256:
            raise BuildError(f"{path} does not have the SHA256 apt expects ({plan.sha256})")
        out.append(DebFile(package, _field(path, "Version").strip(), path))
    return out


def extract_members(deb: Path, wanted: Callable[[str], str | None], dest: Path) -> dict[str, Path]:
    """Write the regular files of ``deb``'s data archive for which ``wanted(member)`` names a
    path (relative to ``dest``); members are named ``usr/bin/ctr`` (no leading ``./``).
    Returns {member: written path}."""
    proc = subprocess.Popen(
        [find_tool("dpkg-deb"), "--fsys-tarfile", str(deb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    written: dict[str, Path] = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = str(PurePosixPath(member.name.removeprefix("./")))
                target = wanted(name) if member.isreg() else None
                if target is None:
                    continue
                rel = PurePosixPath(target)
                if rel.is_absolute() or ".." in rel.parts:
                    raise BuildError(f"unsafe target {target!r} for {name} of {deb.name}")
                path = dest / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with source, open(path, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                path.chmod(0o755 if member.mode & 0o111 else 0o644)
                written[name] = path
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    if code != 0:
        raise BuildError(f"dpkg-deb --fsys-tarfile {deb.name} failed (exit {code}): {stderr}")
    return written
