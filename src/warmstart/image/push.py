"""Pushing an OCI layout to a registry with skopeo (digests kept)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from warmstart.image.tools import find_tool


def push_layout(layout: Path, tag: str, dest: str, *, tls_verify: bool = False) -> None:
    """Push ``layout:tag`` to ``docker://dest`` with skopeo, digests unchanged.

    Without ``--preserve-digests`` skopeo gzips uncompressed layers on the way, which changes
    every digest (and costs a gzip pass over the layer).
    """
    proc = subprocess.run(
        [
            find_tool("skopeo"),
            "copy",
            "--quiet",
            "--preserve-digests",
            f"--dest-tls-verify={'true' if tls_verify else 'false'}",
            f"oci:{layout}:{tag}",
            f"docker://{dest}",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo could not push {dest}: {proc.stderr.strip()[-400:]}")
