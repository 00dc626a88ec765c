"""Private containerd instances and ``ctr`` pulls for the containerd integration tests.

Each instance lives in its own short temp dir under /tmp (unix socket paths are limited to
~100 bytes) and is wiped (stopped by PID, snapshots unmounted, state removed) at teardown, also
when the test fails. containerd hard-codes /run/containerd/{fifo,runc}: tests never create
containers here, only images and snapshots, so instances cannot collide.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.containerd.images import ContainerdImage, parse_images_check
from warmstart_harness.testbed.containerd import CRI_NAMESPACE, ContainerdProcess

from .tools import require_tool


@dataclass
class ContainerdFactory:
    namespace: str = "warmstart"
    started: list[ContainerdProcess] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def __call__(
        self, extra_config: str = "", *, cri_config_path: Path | None = None
    ) -> ContainerdProcess:
        """A started instance. ``cri_config_path``: with its CRI plugin, reading hosts.toml
        files from that directory; ``ctr`` then works in the CRI's namespace ``k8s.io``."""
        for tool in ("containerd", "ctr", "runc"):
            require_tool(tool)
        base = Path(tempfile.mkdtemp(prefix="wsc-", dir="/tmp"))
        self.dirs.append(base)
        ctd = ContainerdProcess(
            base,
            namespace=self.namespace if cri_config_path is None else CRI_NAMESPACE,
            extra_config=extra_config,
            cri_config_path=cri_config_path,
        )
        self.started.append(ctd)
        ctd.start()
        return ctd

    def cleanup(self, failed: bool = False) -> None:
        for ctd in reversed(self.started):
            if failed and ctd.log.exists():
                tail = ctd.log.read_text(errors="replace").splitlines()[-15:]
                sys.stderr.write(f"\n=== containerd {ctd.base} log ===\n" + "\n".join(tail) + "\n")
            ctd.wipe()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def ctr_pull(
    ctd: ContainerdProcess, ref: str, hosts_dir: Path | None = None, *extra: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    args = ["images", "pull"]
    if hosts_dir is not None:
        args += ["--hosts-dir", str(hosts_dir)]
    started = time.monotonic()
    result = ctd.ctr(*args, *extra, ref, check=False, timeout=300)
    return result, time.monotonic() - started


def ctr_pull_command(ctd: ContainerdProcess, ref: str, hosts_dir: Path) -> list[str]:
    return [
        "ctr",
        "--address",
        str(ctd.socket),
        "--namespace",
        ctd.namespace,
        "images",
        "pull",
        "--hosts-dir",
        str(hosts_dir),
        ref,
    ]


def image_state(ctd: ContainerdProcess, ref: str) -> ContainerdImage | None:
    rows = parse_images_check(ctd.ctr("images", "check", check=False).stdout)
    return next((r for r in rows if r.reference == ref), None)


def snapshot_count(ctd: ContainerdProcess) -> int:
    lines = ctd.ctr("snapshots", "ls").stdout.strip().splitlines()
    return max(0, len(lines) - 1)


def write_hosts(out: Path, registry: str, mirror: str, server: str) -> Path:
    """``warmstart containerd-config`` run as a user would (the real CLI, a subprocess)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "warmstart.cli.main",
            "containerd-config",
            "--mirror",
            mirror,
            "--out",
            str(out),
            "--server",
            f"{registry}={server}",
            registry,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"containerd-config failed: {result.stderr.strip()}")
    return out
