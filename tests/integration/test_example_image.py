"""Build the example model image for real, push it, pull it back and run its server.

Downloads Debian packages (debootstrap, from this machine's apt mirror) and wheels (pip's
configured index): marked ``package_registries``. The debootstrap rootfs and the wheels are
cached in one directory per test session (or in ``$WARMSTART_IMAGE_CACHE`` when set, to reuse
them across sessions), so debootstrap runs at most once a session.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require_tool
from warmstart_harness.example_image.build import BuildOptions, build_example
from warmstart_harness.testbed.registry import RegistryProcess

pytestmark = [pytest.mark.package_registries, pytest.mark.timeout(300)]

PADDING = 16 << 20


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="warmstart-image-run-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http(url: str, data: Any = None) -> tuple[int, Any]:
    raw = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class ChrootServer:
    """``chroot ROOTFS /usr/local/bin/serve`` with the image's env; stopped by its PID."""

    def __init__(self, rootfs: Path, image_env: list[str], log: Path, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        merged = dict(item.split("=", 1) for item in image_env)
        merged.update(env, PORT=str(self.port))
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [shutil.which("chroot") or "/usr/sbin/chroot", str(rootfs), "/usr/local/bin/serve"],
                env=merged,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60) -> tuple[list[int], Any]:
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                status, payload = _http(self.url + "/ping")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
                continue
            statuses.append(status)
            if status == 200:
                return statuses, payload
            time.sleep(0.05)
        pytest.fail(f"/ping never answered 200 ({statuses[-5:]}):\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_build_push_pull_and_serve(
    registry: RegistryProcess, image_cache: Path, workdir: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    require_tool("debootstrap")
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")

    options = BuildOptions(
        cache=image_cache,
        registry=registry.host,
        tag="test",
        insecure=True,
        padding_bytes=PADDING,
        layout=workdir / "layout",
    )
    result = build_example(options, log=print)
    names = [layer.name for layer in result.layers]
    assert names == ["base", "deps", "server", "model", "padding"]
    sizes = {layer.name: layer.size for layer in result.layers}
    assert sizes["padding"] >= PADDING  # incompressible: gzip cannot shrink it
    assert 20e6 < sizes["model"] < 40e6
    assert sizes["deps"] < 80e6 and sizes["base"] < 80e6

    # Pull back what the registry holds (same digest), unpack it, run its entrypoint.
    pulled = workdir / "pulled"
    subprocess.run(
        [
            skopeo, "copy", "--quiet", "--src-tls-verify=false",
            f"docker://{result.reference}", f"oci:{pulled}:test",
        ],
        check=True,
    )  # fmt: skip
    index = json.loads((pulled / "index.json").read_text())
    assert index["manifests"][0]["digest"] == result.manifest.digest
    bundle = workdir / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{pulled}:test", str(bundle)], check=True,
                   capture_output=True)  # fmt: skip
    process = json.loads((bundle / "config.json").read_text())["process"]
    assert process["args"] == ["/usr/local/bin/serve"]
    assert "PORT=8080" in process["env"]
    rootfs = bundle / "rootfs"
    model_bytes = sum(p.stat().st_size for p in (rootfs / "opt/ml/model").rglob("*") if p.is_file())
    assert (rootfs / "opt/ml/model/padding/padding-000.bin").stat().st_size == PADDING

    server = ChrootServer(rootfs, process["env"], workdir / "serve.log")
    try:
        statuses, ping = server.wait_ready()
        assert set(statuses) <= {200, 503}
        assert ping["weights"]["bytes"] == model_bytes  # every weight byte, padding included
        texts = [
            "A man is playing a guitar.",
            "Someone is playing an acoustic guitar.",
            "The central bank raised interest rates.",
        ]
        status, payload = _http(server.url + "/invocations", {"texts": texts})
        assert status == 200, payload
        vectors = payload["embeddings"]
        assert [len(v) for v in vectors] == [384, 384, 384]
        for v in vectors:
            assert math.isclose(math.sqrt(_cos(v, v)), 1.0, abs_tol=1e-4)
        assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.3
        status, payload = _http(server.url + "/invocations", {"inputs": texts[0]})
        assert status == 200 and _cos(payload["embeddings"][0], vectors[0]) > 0.999
        assert _http(server.url + "/invocations", {"texts": 3})[0] == 400
    finally:
        server.stop()
    assert "read 3 files" in server.log.read_text()

    bench = ChrootServer(
        rootfs,
        process["env"],
        workdir / "bench.log",
        WARMSTART_BENCH_MODE="1",
        MAX_CONCURRENCY="2",
        WARMSTART_BENCH_TIME_SCALE="0.01",
    )
    try:
        _, ping = bench.wait_ready()
        assert ping["bench_mode"] is True and ping["weights"]["bytes"] == model_bytes
        status, payload = _http(
            bench.url + "/invocations", {"input_tokens": 1000, "output_tokens": 10}
        )
        assert status == 200
        assert payload["service_seconds"] == pytest.approx((1000 * 0.00025 + 10 * 0.028) * 0.01)
    finally:
        bench.stop()
