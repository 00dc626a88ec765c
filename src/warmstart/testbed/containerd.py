"""A private containerd instance (own root, state and socket), and ``ctr`` against it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from warmstart.testbed.procs import stop_process, wait_ready

CONFIG_TEMPLATE = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"""


class ContainerdProcess:
    """``containerd`` with everything under ``base``; stop() ends it by PID."""

    def __init__(
        self,
        base: Path,
        *,
        namespace: str = "warmstart",
        netns: str | None = None,
        extra_config: str = "",
    ) -> None:
        self.base = Path(base)
        self.extra_config = extra_config  # TOML appended to the config file
        self.namespace = namespace
        self.netns = netns
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.socket = self.base / "containerd.sock"
        self.config = self.base / "config.toml"
        self.log = self.base / "containerd.log"
        self.proc: subprocess.Popen | None = None
        if len(str(self.socket)) > 100:
            raise ValueError(f"containerd socket path too long for a unix socket: {self.socket}")

    def _prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []

    def start(self, timeout: float = 20.0) -> ContainerdProcess:
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            CONFIG_TEMPLATE.format(root=self.root, state=self.state, socket=self.socket)
            + self.extra_config
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self._prefix(), "containerd", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_ready(
            lambda: self.socket.exists() and self.ctr("version", check=False).returncode == 0,
            timeout,
            "containerd",
            self.proc,
            self.log,
        )
        return self

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 600.0, netns: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this instance (inside its network namespace, if it has one)."""
        cmd = [
            *(self._prefix() if netns else []),
            "ctr",
            "--address",
            str(self.socket),
            "--namespace",
            self.namespace,
            *args,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
        return result

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def wipe(self) -> None:
        """Stop and delete all state (content, snapshots, metadata)."""
        self.stop()
        for d in (self.root, self.state):
            subprocess.run(["umount", "-R", str(d)], capture_output=True, check=False)
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> ContainerdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.wipe()
