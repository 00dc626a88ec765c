"""Generated OCI layouts: layers of random bytes and of files copied from this machine."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

from warmstart_harness.testbed.layout import LayerSpec, write_image


def test_layer_with_host_files(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_bytes(b"#!/bin/sh\nexit 0\n")
    os.chmod(tool, 0o755)
    spec = LayerSpec((("data/r.bin", 1000),), seed=3, host_files=(("bin/tool", str(tool)),))
    image = write_image(tmp_path / "oci", "v1", [spec])
    layer = tmp_path / "oci" / "blobs" / "sha256" / image.layer_digests[0].hex
    assert hashlib.sha256(layer.read_bytes()).hexdigest() == image.layer_digests[0].hex
    with tarfile.open(layer) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"data/r.bin", "bin/tool"}
        assert members["bin/tool"].mode == 0o755 and members["data/r.bin"].mode == 0o644
        extracted = tar.extractfile("bin/tool")
        assert extracted is not None and extracted.read() == tool.read_bytes()
    # the same spec gives the same layer (the host file's mtime is not recorded)
    os.utime(tool, (1, 1))
    again = write_image(tmp_path / "oci2", "v1", [spec])
    assert again.layer_digests == image.layer_digests
    config = json.loads(
        (tmp_path / "oci" / "blobs" / "sha256" / image.config_digest.hex).read_text()
    )
    assert config["rootfs"]["diff_ids"] == [str(image.layer_digests[0])]
