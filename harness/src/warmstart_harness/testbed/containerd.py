"""A private containerd instance (own root, state and socket), and ``ctr`` against it.

Its CRI plugin is disabled unless ``cri_config_path`` is given: then it runs (the kubelet's
image service on the same socket; images in namespace ``k8s.io``) with
``[plugins."io.containerd.grpc.v1.cri".registry] config_path`` naming that hosts.toml directory,
its streaming server on 127.0.0.1 (a free port), and empty CNI directories of its own: the
image service needs no CNI (the plugin loads and logs that pod networking is not ready).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from warmstart.containerd.ctr import CRI_NAMESPACE
from warmstart.containerd.hosts import toml_string
from warmstart_harness.testbed.procs import stop_process, wait_ready

CRI_PLUGIN = "io.containerd.grpc.v1.cri"
DISABLED_PLUGINS = (
    CRI_PLUGIN,
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
)

CONFIG_TEMPLATE = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = {disabled}

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"""

CRI_TEMPLATE = """
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {config_path}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
"""


def render_config(
    root: Path, state: Path, socket: Path, cri: tuple[Path, Path] | None = None
) -> str:
    """The config file; ``cri`` = (hosts.toml directory, CNI base directory) enables CRI."""
    disabled = [p for p in DISABLED_PLUGINS if cri is None or p != CRI_PLUGIN]
    text = CONFIG_TEMPLATE.format(
        root=root,
        state=state,
        socket=socket,
        disabled="[" + ", ".join(toml_string(p) for p in disabled) + "]",
    )
    if cri is not None:
        config_path, cni = cri
        text += CRI_TEMPLATE.format(
            config_path=toml_string(str(config_path)),
            cni_bin=toml_string(str(cni / "bin")),
            cni_conf=toml_string(str(cni / "net.d")),
        )
    return text


class ContainerdProcess:
    """``containerd`` with everything under ``base``; stop() ends it by PID."""

    def __init__(
        self,
        base: Path,
        *,
        namespace: str = "warmstart",
        netns: str | None = None,
        extra_config: str = "",
        cri_config_path: Path | None = None,
        root: Path | None = None,
    ) -> None:
        self.base = Path(base)
        self.extra_config = extra_config  # TOML appended to the config file
        self.cri_config_path = cri_config_path  # set: the CRI plugin runs, reading hosts.toml here
        self.namespace = namespace
        self.netns = netns
        # its content store and snapshots; elsewhere than BASE/root when a test lays out a
        # node's /var/lib (the agent's store and containerd's root on one mount)
        self.root = Path(root) if root is not None else self.base / "root"
        self.state = self.base / "state"
        self.socket = self.base / "containerd.sock"
        self.config = self.base / "config.toml"
        self.log = self.base / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if len(str(self.socket)) > 100:
            raise ValueError(f"containerd socket path too long for a unix socket: {self.socket}")

    def _prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []

    def start(self, timeout: float = 20.0) -> ContainerdProcess:
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        cri = None
        if self.cri_config_path is not None:
            cni = self.base / "cni"
            for d in (self.cri_config_path, cni / "bin", cni / "net.d"):
                d.mkdir(parents=True, exist_ok=True)
            cri = (self.cri_config_path, cni)
        self.config.write_text(
            render_config(self.root, self.state, self.socket, cri) + self.extra_config
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


__all__ = ["CRI_NAMESPACE", "CRI_PLUGIN", "ContainerdProcess", "render_config"]
