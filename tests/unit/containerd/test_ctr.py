"""Running ``ctr`` (warmstart.containerd.ctr)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from warmstart.containerd.ctr import ContainerdTarget, Ctr, last_error_line, pull_args


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ctr"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(0o755)
    return path


def test_last_error_line_takes_the_last_message() -> None:
    assert last_error_line("a\n\nctr: failed: boom\n  \n") == "ctr: failed: boom"
    assert last_error_line("") == ""


async def test_ctr_timeout_kills_the_child(tmp_path: Path) -> None:
    ctr = _script(tmp_path, "import time; time.sleep(30)")
    with pytest.raises(TimeoutError):
        await Ctr(tmp_path / "c.sock", binary=str(ctr)).run("images", "check", time_limit=0.3)


def test_pull_args(tmp_path: Path) -> None:
    args = pull_args("127.0.0.1:5000/team/app:v1", tmp_path, "linux/arm64", "native")
    assert args == [
        "images",
        "pull",
        "--hosts-dir",
        str(tmp_path),
        "--platform",
        "linux/arm64",
        "--snapshotter",
        "native",
        "127.0.0.1:5000/team/app:v1",
    ]
    bare = pull_args("r.io/a:v1", tmp_path, None, None)
    assert bare == ["images", "pull", "--hosts-dir", str(tmp_path), "r.io/a:v1"]


def test_containerd_target_runs_ctr_against_its_socket_and_namespace() -> None:
    target = ContainerdTarget(Path("/run/c.sock"), "k8s.io", ctr_binary="/bin/ctr", prefix=("x",))
    assert target.ctr().command("images", "ls") == [
        "x", "/bin/ctr", "--address", "/run/c.sock", "--namespace", "k8s.io", "images", "ls",
    ]  # fmt: skip
