"""``warmstart bench pull``: pull one large single-layer image with warmstart, skopeo and ctr.

Every contender pulls the same image from the same local ``docker-registry`` in each round, in a
rotated order, into an empty destination; the table shows medians. What each one does:

- ``warmstart``: ``warmstart pull`` into an empty store (sha256 verified while streaming, fsync,
  atomic rename);
- ``skopeo``: ``skopeo copy docker://... oci:DIR`` (verifies digests too; layers kept as-is);
- ``ctr``: ``ctr content fetch`` into a fresh private containerd (the same path ``ctr pull`` fetches).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from warmstart_harness.bench.plots import bar_chart
from warmstart_harness.bench.stats import median, rate_mb_s, rotated
from warmstart_harness.testbed.containerd import ContainerdProcess
from warmstart_harness.testbed.layout import LayerSpec, push_layout, write_image
from warmstart_harness.testbed.registry import RegistryProcess

CONTENDERS = ("warmstart", "skopeo", "ctr")


@dataclass
class PullBenchResult:
    image_bytes: int
    rounds: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def medians(self) -> dict[str, float]:
        return {name: median(s) for name, s in self.samples.items() if s}

    def rates(self) -> dict[str, float]:
        return {name: rate_mb_s(self.image_bytes, t) for name, t in self.medians().items()}

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_seconds": self.medians(),
            "median_mb_per_s": self.rates(),
        }


def _timed(cmd: list[str], check_ok: Callable[[], bool] | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    if check_ok is not None and not check_ok():
        raise RuntimeError(f"{cmd[0]} exited 0 but the content is not there")
    return elapsed


def run_pull_bench(
    size: int,
    rounds: int,
    workdir: Path | None = None,
    contenders: tuple[str, ...] = CONTENDERS,
    log: Callable[[str], None] = print,
) -> PullBenchResult:
    own = workdir is None
    base = Path(tempfile.mkdtemp(prefix="ws-bench-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    registry = RegistryProcess(base / "registry")
    containerd = ContainerdProcess(base / "ctd", namespace="bench")
    try:
        log(f"building a {size / 2**30:.2f} GiB single-layer image ...")
        image = write_image(base / "layout", "big", [LayerSpec((("weights.bin", size),), seed=7)])
        ref = f"{registry.host}/bench/big:v1"
        push_layout(image.layout, "big", ref)
        shutil.rmtree(image.layout)
        layer = image.layer_digests[0]
        result = PullBenchResult(image.total_size, rounds, {c: [] for c in contenders})

        def run_one(name: str) -> float:
            dest = base / f"dest-{name}"
            shutil.rmtree(dest, ignore_errors=True)
            if name == "warmstart":
                cmd = [
                    sys.executable,
                    "-m",
                    "warmstart.cli.main",
                    "pull",
                    ref,
                    "--store",
                    str(dest),
                    "--insecure-registry",
                    registry.host,
                    "--quiet",
                ]
                return _timed(cmd, lambda: (dest / "blobs" / "sha256" / layer.hex).exists())
            if name == "skopeo":
                cmd = [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--src-tls-verify=false",
                    "--preserve-digests",
                    "--dest-oci-accept-uncompressed-layers",
                    f"docker://{ref}",
                    f"oci:{dest}:v1",
                ]
                return _timed(cmd, lambda: (dest / "blobs" / "sha256" / layer.hex).exists())
            if name == "ctr":
                containerd.wipe()
                containerd.start()
                cmd = [
                    "ctr",
                    "--address",
                    str(containerd.socket),
                    "--namespace",
                    "bench",
                    "content",
                    "fetch",
                    "--plain-http",
                    ref,
                ]
                return _timed(
                    cmd, lambda: str(layer) in containerd.ctr("content", "ls", "-q").stdout
                )
            raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")

        for r in range(rounds):
            for name in rotated(list(contenders), r):
                seconds = run_one(name)
                result.samples[name].append(seconds)
                log(
                    f"round {r + 1}/{rounds} {name:9s} {seconds:6.2f}s "
                    f"{rate_mb_s(image.total_size, seconds):7.0f} MB/s"
                )
                shutil.rmtree(base / f"dest-{name}", ignore_errors=True)
        return result
    finally:
        containerd.wipe()
        registry.stop()
        if own:
            shutil.rmtree(base, ignore_errors=True)


def write_report(
    result: PullBenchResult, json_path: Path | None, out_dir: Path | None
) -> list[Path]:
    written: list[Path] = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_json(), indent=2))
        written.append(json_path)
    if out_dir is not None:
        written.append(
            bar_chart(
                out_dir / "pull.png",
                f"Pull of a {result.image_bytes / 2**30:.2f} GiB image from a local registry "
                f"(median of {result.rounds})",
                "MB/s (higher is better)",
                result.rates(),
                {
                    n: [rate_mb_s(result.image_bytes, t) for t in s]
                    for n, s in result.samples.items()
                },
            )
        )
        table = markdown_table(result)
        (out_dir / "pull.md").write_text(table)
        written.append(out_dir / "pull.md")
    return written


def markdown_table(result: PullBenchResult) -> str:
    medians, rates = result.medians(), result.rates()
    ref = medians.get("skopeo")
    lines = [
        "| tool | median s | MB/s | vs skopeo | samples (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name in result.samples:
        if name not in medians:
            continue
        ratio = f"{ref / medians[name]:.2f}x" if ref else "-"
        samples = ", ".join(f"{s:.2f}" for s in result.samples[name])
        lines.append(f"| {name} | {medians[name]:.2f} | {rates[name]:.0f} | {ratio} | {samples} |")
    return "\n".join(lines) + "\n"
