from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from warmstart.image.base import prune_rootfs
from warmstart.image.layers import tree_size
from warmstart.image.umoci import Umoci
from warmstart.image.wheels import SITE_PACKAGES
from warmstart_harness.example_image.build import BuildOptions, stage_server


def test_staged_server_imports_without_the_rest_of_warmstart(tmp_path: Path) -> None:
    usr_local = stage_server(tmp_path)
    assert usr_local == tmp_path / "usr/local"
    serve = tmp_path / "usr/local/bin/serve"
    assert serve.stat().st_mode & 0o111
    assert serve.read_text().startswith("#!/usr/bin/python3\n")
    site = tmp_path / SITE_PACKAGES
    assert (site / "warmstart_harness/model_server/app.py").exists()
    # Import the staged copy in a clean interpreter: only it (and the host's numpy) on the path.
    code = (
        "import warmstart_harness, warmstart_harness.model_server.app as a,"
        " warmstart_harness.model_server.__main__;"
        "print(warmstart_harness.__file__)"
    )
    env = {"PYTHONPATH": str(site), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.append({str(_numpy_dir())!r}); {code}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith(str(site))


def _numpy_dir() -> Path:
    import numpy

    return Path(numpy.__file__).parent.parent


def test_options_reference_and_layout(tmp_path: Path) -> None:
    options = BuildOptions(cache=tmp_path, registry="127.0.0.1:5000", tag="v1")
    assert options.reference == "127.0.0.1:5000/warmstart/example-minilm:v1"
    assert options.layout_dir == tmp_path / "layout"
    assert BuildOptions(cache=tmp_path).reference is None


def test_prune_rootfs(tmp_path: Path) -> None:
    for rel in ("var/cache/apt/archives/x.deb", "usr/share/doc/a/README", "usr/bin/python3"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    prune_rootfs(tmp_path)
    assert (tmp_path / "usr/bin/python3").exists()
    assert not (tmp_path / "usr/share/doc").exists()
    assert list((tmp_path / "var/cache/apt").iterdir()) == []
    assert (tmp_path / "var/lib/apt/lists/partial").is_dir()
    assert tree_size(tmp_path) == 1


def test_manifest_reading(tmp_path: Path) -> None:
    def blob(obj: object) -> str:
        import hashlib

        data = json.dumps(obj).encode()
        hex_ = hashlib.sha256(data).hexdigest()
        (tmp_path / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (tmp_path / "blobs/sha256" / hex_).write_bytes(data)
        return f"sha256:{hex_}"

    config = blob({"config": {"Entrypoint": ["/usr/local/bin/serve"]}})
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:ab"}
    manifest = blob({"config": {"digest": config}, "layers": [{**layer, "size": 7}]})
    (tmp_path / "index.json").write_text(
        json.dumps(
            {
                "manifests": [
                    {
                        "digest": manifest,
                        "size": 10,
                        "annotations": {"org.opencontainers.image.ref.name": "latest"},
                    }
                ]
            }
        )
    )
    umoci = Umoci(tmp_path, "latest")
    parsed = umoci.manifest()
    assert parsed.digest == manifest and parsed.layers[0].size == 7
    assert umoci.config()["config"]["Entrypoint"] == ["/usr/local/bin/serve"]


def test_normalize_mtimes(tmp_path: Path) -> None:
    from warmstart.image.layers import normalize_mtimes

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to("d/f")
    normalize_mtimes(tmp_path, epoch=5)
    for path in (tmp_path, tmp_path / "d", tmp_path / "d" / "f"):
        assert path.stat().st_mtime == 5
    assert (tmp_path / "link").lstat().st_mtime == 5
