"""``ctr images check`` parsing and the hot/warm/partial tiers (warmstart.containerd.images)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from warmstart.containerd.ctr import Ctr, CtrError
from warmstart.containerd.images import (
    ContainerdImage,
    ContainerdImages,
    hot_names,
    parse_images_check,
    tiers,
)

M = "application/vnd.oci.image.manifest.v1+json"
I = "application/vnd.oci.image.index.v1+json"  # noqa: E741
D1, D2, D3, D4 = (f"sha256:{c * 64}" for c in "1234")

# Exactly as containerd 1.6.20's ctr prints it (tabwriter, trailing spaces kept).
CHECK = f"""REF                        TYPE    DIGEST   STATUS         SIZE            UNPACKED 
127.0.0.1:1/other/name:tag {M} {D1} complete (3/3) 3.8 MiB/3.8 MiB false
127.0.0.1:46453/x/app:v1   {M} {D1} complete (3/3) 3.8 MiB/3.8 MiB true
docker.io/library/busybox:latest {I} {D2} incomplete (2/3) 1.0 MiB/2.0 MiB false
registry.example/weights@{D4} {M} {D3} unavailable (1/?) 478.0 B/? false
registry.example/broken:v1 {M} {D4} error - false
"""  # noqa: W291


def test_parse_every_status() -> None:
    rows = parse_images_check(CHECK)
    assert [r.reference for r in rows] == [
        "127.0.0.1:1/other/name:tag",
        "127.0.0.1:46453/x/app:v1",
        "docker.io/library/busybox:latest",
        f"registry.example/weights@{D4}",
        "registry.example/broken:v1",
    ]
    assert rows[1] == ContainerdImage("127.0.0.1:46453/x/app:v1", M, D1, "complete", 3, 3, True)
    assert rows[2].status == "incomplete" and (rows[2].present, rows[2].required) == (2, 3)
    assert rows[2].media_type == I
    assert rows[3].status == "unavailable" and rows[3].required is None
    assert rows[4].status == "error" and rows[4].present == 0
    assert [r.tier for r in rows] == ["warm", "hot", "partial", "partial", "partial"]


def test_tiers_and_hot_names() -> None:
    rows = parse_images_check(CHECK)
    assert tiers(rows) == {
        "hot": ["127.0.0.1:46453/x/app:v1"],
        "warm": ["127.0.0.1:1/other/name:tag"],
        "partial": [
            "docker.io/library/busybox:latest",
            "registry.example/broken:v1",
            f"registry.example/weights@{D4}",
        ],
    }
    assert hot_names(rows) == {"127.0.0.1:46453/x/app:v1", D1}


def test_empty_and_garbage() -> None:
    assert parse_images_check("") == []
    assert parse_images_check("REF TYPE DIGEST STATUS SIZE UNPACKED\nnot a row\n") == []


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ctr"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(0o755)
    return path


async def test_containerd_images_runs_ctr(tmp_path: Path) -> None:
    out = tmp_path / "args"
    ctr = _script(
        tmp_path,
        f"open({str(out)!r}, 'w').write(' '.join(sys.argv[1:]))\nprint({CHECK!r})",
    )
    images = ContainerdImages(Ctr(tmp_path / "c.sock", "k8s.io", str(ctr)), snapshotter="native")
    assert await images.hot_references() == {"127.0.0.1:46453/x/app:v1", D1}
    assert out.read_text() == (
        f"--address {tmp_path / 'c.sock'} --namespace k8s.io images check --snapshotter native"
    )
    assert (await images.image("127.0.0.1:1/other/name:tag")).tier == "warm"  # type: ignore[union-attr]
    assert await images.image("nope") is None
    assert (await images.tiers())["hot"] == ["127.0.0.1:46453/x/app:v1"]


async def test_ctr_failure_without_rows_raises(tmp_path: Path) -> None:
    ctr = _script(tmp_path, "sys.stderr.write('ctr: connection refused\\n'); sys.exit(1)")
    with pytest.raises(CtrError, match="ctr images check failed: ctr: connection refused"):
        await ContainerdImages(Ctr(tmp_path / "c.sock", binary=str(ctr))).images()


async def test_ctr_partial_failure_keeps_rows(tmp_path: Path) -> None:
    ctr = _script(tmp_path, f"print({CHECK!r}); sys.exit(1)")
    assert len(await ContainerdImages(Ctr(tmp_path / "c.sock", binary=str(ctr))).images()) == 5
