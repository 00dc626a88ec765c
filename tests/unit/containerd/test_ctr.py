"""Running ``ctr`` (warmstart.containerd.ctr)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from warmstart.containerd.ctr import Ctr, last_error_line


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
