"""Python wheels for the image: downloaded with pip, unpacked into the rootfs's site-packages.

No pip runs inside the image: a wheel is a zip whose members go (after ``*.data/purelib`` and
``platlib`` are folded in) straight into ``dist-packages``. Pruning removes what a server never
imports (tests, headers, onnxruntime's export and quantisation tools) to keep the layer small.
"""

from __future__ import annotations

import fnmatch
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from warmstart.image.tools import run

IMAGE_PYTHON = "3.11"  # Debian bookworm's python3 (3.11.2)
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
# Oldest first: pip takes any wheel tagged for one of these; bookworm's glibc is 2.36.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_28_x86_64",
)

PRUNE_PATTERNS = (
    "*/__pycache__/*",
    "*.pyi",
    "*/tests/*",
    "*/testing/*",
    "numpy/_core/include/*",
    "numpy/f2py/*",
    "numpy/typing/*",
    "numpy/_pyinstaller/*",
    "numpy/distutils/*",
    "numpy/doc/*",
    "onnxruntime/tools/*",
    "onnxruntime/transformers/*",
    "onnxruntime/quantization/*",
    "onnxruntime/datasets/*",
    "onnxruntime/backend/*",
    "*.dist-info/RECORD",
)


@dataclass(frozen=True)
class UnpackStats:
    wheels: int
    files: int
    bytes: int
    pruned_files: int


def pip_download(
    requirements: Sequence[str],
    dest: Path,
    *,
    binary_for_image: bool,
    no_deps: bool = True,
) -> list[Path]:
    """``pip download`` into ``dest`` (reused: pip skips files already there); the wheels.

    ``binary_for_image`` asks for cp311 manylinux wheels whatever the host runs.
    """
    dest.mkdir(parents=True, exist_ok=True)
    argv: list[str | Path] = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--disable-pip-version-check",
    ]
    argv += ["--only-binary=:all:", "-d", dest]
    if binary_for_image:
        argv += ["--python-version", IMAGE_PYTHON, "--implementation", "cp", "--abi", "cp311"]
        argv += ["--abi", "abi3", "--abi", "none"]
        for platform in PLATFORMS:
            argv += ["--platform", platform]
    if no_deps:
        argv.append("--no-deps")
    argv += list(requirements)
    run(argv, what=f"pip download {' '.join(requirements)}")
    names = {dist_name(r) for r in requirements}
    wheels = [w for w in dest.glob("*.whl") if dist_name(w.name.split("-", 1)[0]) in names]
    # Several versions may sit in the cache: keep the newest of each project.
    newest: dict[str, Path] = {}
    for wheel in sorted(wheels, key=lambda w: (w.stat().st_mtime, w.name)):
        newest[dist_name(wheel.name.split("-", 1)[0])] = wheel
    return sorted(newest.values())


def dist_name(requirement: str) -> str:
    name = requirement
    for sep in "<>=!~;[ (":
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("-", "_").replace(".", "_")


def pruned(member: str, patterns: Sequence[str] = PRUNE_PATTERNS) -> bool:
    return any(fnmatch.fnmatch(member, p) or fnmatch.fnmatch("/" + member, p) for p in patterns)


def _target(member: str) -> str | None:
    """Where a wheel member lands relative to site-packages (``None``: skip it)."""
    parts = PurePosixPath(member).parts
    if not parts or member.endswith("/"):
        return None
    if parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in {"purelib", "platlib"}:
            return str(PurePosixPath(*parts[2:]))
        return None  # scripts, headers, data: not needed by the server
    if ".." in parts or member.startswith("/"):
        raise ValueError(f"unsafe path in wheel: {member!r}")
    return member


def unpack_wheels(
    wheels: Sequence[Path], site_packages: Path, *, prune: Sequence[str] = PRUNE_PATTERNS
) -> UnpackStats:
    files = size = skipped = 0
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                rel = _target(info.filename)
                if rel is None:
                    continue
                if pruned(rel, prune):
                    skipped += 1
                    continue
                dest = site_packages / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                mode = (info.external_attr >> 16) & 0o777
                dest.chmod(0o755 if mode & 0o111 else 0o644)
                files += 1
                size += info.file_size
    return UnpackStats(len(wheels), files, size, skipped)
