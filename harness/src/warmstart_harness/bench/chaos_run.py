"""One chaos run's shared state: the generated images, the integrity scan of every blob file,
and :class:`Run` (the cluster, its nodes and pulls through their agents)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.runtime.interfaces import ReplicaError
from warmstart_harness.bench.chaos_plan import (
    ChaosConfig,
    ChaosPlan,
)
from warmstart_harness.bench.chaos_report import (
    PROBE,
    ClassResult,
    PullRecord,
    is_broken_body,
)
from warmstart_harness.bench.scaleout_nodes import NodeStack
from warmstart_harness.testbed.agent import AgentProcess
from warmstart_harness.testbed.layout import LayerSpec, LayoutImage, push_layout, write_image
from warmstart_harness.testbed.netcluster import NetCluster
from warmstart_harness.testbed.registry import RegistryProcess

Log = Callable[[str], None]


REPOSITORY = "chaos/app"
CONTENT_BLOBS = Path("io.containerd.content.v1.content") / "blobs" / "sha256"
RETRY_PAUSE = 0.5  # seconds before a retry of a pull whose body broke (times the attempt)
PROBES = 3  # pulls tried after a fault until one succeeds
_HEX = re.compile(r"^[0-9a-f]{64}$")


# -- the image ------------------------------------------------------------------------------


def parse_ldd(text: str) -> list[str]:
    """The libraries (and the loader) ``ldd BINARY`` lists, as absolute paths (pure)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (", 1)[0].strip()
            if target.startswith("/"):
                out.append(target)
        elif line.startswith("/"):
            out.append(line.split(" (", 1)[0].strip())
    return out


def base_layer(binary: str = "/bin/true") -> LayerSpec:
    """``/bin/true`` and what it needs to run (libc, the loader), at the paths ``ldd`` names."""
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    libs = parse_ldd(proc.stdout) if proc.returncode == 0 else []  # static: nothing to add
    files = [(binary.lstrip("/"), os.path.realpath(binary))]
    files += [(lib.lstrip("/"), os.path.realpath(lib)) for lib in libs]
    return LayerSpec((), seed=0, host_files=tuple(files))


def build_images(plan: ChaosPlan, layout: Path, dest_host: str, log: Log) -> dict[str, LayoutImage]:
    """Write every image of the plan into one OCI layout and push it upstream."""
    started = time.monotonic()
    base = base_layer()
    built: dict[str, LayoutImage] = {}
    for spec in plan.images:
        built[spec.tag] = write_image(
            layout,
            spec.tag,
            [
                base,
                LayerSpec((("data/big.bin", spec.big_bytes),), seed=spec.seed),
                LayerSpec((("data/small.bin", spec.small_bytes),), seed=spec.seed + 500_000),
            ],
        )
        push_layout(layout, spec.tag, f"{dest_host}/{REPOSITORY}:{spec.tag}")
    total = sum(i.total_size for i in built.values())
    log(
        f"images: {len(built)} built and pushed ({total / 2**20:.0f} MiB) in "
        f"{time.monotonic() - started:.1f} s"
    )
    return built


# -- integrity: re-hash every blob file ------------------------------------------------------


class IntegrityScanner:
    """Hashes blob files; a file unchanged since it was hashed (same inode, size, mtime and
    ctime: an in-place write changes them) is not read again."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int, int], str] = {}

    @staticmethod
    def _hash(path: Path) -> str:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def scan(self, dirs: Sequence[tuple[str, Path]]) -> tuple[int, list[str]]:
        """(files checked, ``"<label>/<hex>"`` of every file whose bytes do not match)."""
        todo: list[tuple[str, Path, tuple[int, int, int, int, int]]] = []
        for label, directory in dirs:
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not _HEX.match(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                todo.append((label, Path(entry.path), key))
        fresh = {key: path for _, path, key in todo if key not in self._known}
        with ThreadPoolExecutor(2, thread_name_prefix="chaos-scan") as pool:
            for key, digest in zip(fresh, pool.map(self._safe_hash, fresh.values()), strict=True):
                if digest is not None:
                    self._known[key] = digest
        bad = [
            f"{label}/{path.name[:12]}"
            for label, path, key in todo
            if key in self._known and self._known[key] != path.name
        ]
        return len(todo), bad

    def _safe_hash(self, path: Path) -> str | None:
        try:
            return self._hash(path)
        except FileNotFoundError:
            return None


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    config: ChaosConfig
    plan: ChaosPlan
    net: NetCluster
    upstream: RegistryProcess
    stacks: list[NodeStack]
    images: dict[str, LayoutImage]
    work: Path
    log: Log
    t0: float
    cleanup: contextlib.ExitStack
    scanner: IntegrityScanner = field(default_factory=IntegrityScanner)
    extra_stores: dict[str, Path] = field(default_factory=dict)  # label: store root
    corrupt_seen: set[str] = field(default_factory=set)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def ref(self, tag: str) -> str:
        return f"{self.upstream.host}/{REPOSITORY}:{tag}"

    def say(self, text: str) -> None:
        self.log(f"[{self.now():6.1f}s] {text}")

    def agent(self, stack: NodeStack) -> AgentProcess:
        assert stack.agent is not None
        return stack.agent

    def agent_urls(self) -> list[str]:
        return [self.agent(s).url for s in self.stacks]

    def big(self, tag: str) -> tuple[str, int]:
        image = self.images[tag]
        return str(image.layer_digests[1]), image.layer_sizes[1]

    def layer(self, tag: str, which: str) -> tuple[str, int]:
        image = self.images[tag]
        index = 1 if which == "big" else 2
        return str(image.layer_digests[index]), image.layer_sizes[index]

    def blob_dirs(self) -> list[tuple[str, Path]]:
        dirs: list[tuple[str, Path]] = []
        for s in self.stacks:
            dirs.append((f"{s.name}/agent", self.agent(s).store / "blobs" / "sha256"))
            dirs.append((f"{s.name}/containerd", s.containerd.root / CONTENT_BLOBS))
        for label, root in self.extra_stores.items():
            dirs.append((label, root / "blobs" / "sha256"))
        return dirs

    # -- pulls and starts -----------------------------------------------------------------

    async def _run_container(self, stack: NodeStack, ref: str) -> None:
        cid = f"chaos{stack.node.index}-{next(self.ids)}"
        result = await stack.runtime().ctr.run("run", "--rm", ref, cid, time_limit=3600)
        if result.returncode != 0:
            err = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
            raise ReplicaError(f"ctr run {ref} failed: {err}")

    async def pull(
        self,
        stack: NodeStack,
        tag: str,
        *,
        fault: str,
        injection: int,
        role: str,
        start: bool = False,
        tier: str | None = None,
    ) -> PullRecord:
        """``ctr images pull`` through the node's agent (and ``ctr run`` if ``start``), under
        the pull deadline, retried when its body broke."""
        ref = self.ref(tag)
        started = self.now()
        deadline = time.monotonic() + self.config.pull_timeout
        attempts, ok, timed_out, error = 0, False, False, None
        while True:
            attempts += 1
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                async with asyncio.timeout(left):
                    await stack.runtime().pull(ref)
                    if start:
                        await self._run_container(stack, ref)
                ok, error = True, None
                break
            except TimeoutError:
                timed_out = True
                break
            except ReplicaError as e:  # ImagePullError, RuntimeUnavailable
                error = str(e)
                if attempts > self.config.pull_retries or not is_broken_body(error):
                    break
                await asyncio.sleep(
                    min(RETRY_PAUSE * attempts, max(0.0, deadline - time.monotonic()))
                )
        record = PullRecord(
            fault, injection, stack.name, tag, role, started, self.now(), ok, timed_out,
            error, attempts, "start" if start else "pull", tier,
        )  # fmt: skip
        state = "hung" if timed_out else ("ok" if ok else f"FAILED: {error}")
        self.say(
            f"  {'start' if start else 'pull'} {tag} on {stack.name} ({role}"
            f"{', ' + tier if tier else ''}): {record.seconds:.2f} s, {state}"
            + (f" after {attempts} attempts" if attempts > 1 else "")
        )
        return record

    async def probe(
        self,
        stack: NodeStack,
        tag: str,
        fault: str,
        injection: int,
        result: ClassResult,
        after: float | None = None,
    ) -> None:
        """Pull on the faulted node until one succeeds (the recovery), at most PROBES times;
        with ``after``, only if no pull on the node has succeeded since then."""
        if after is not None and any(
            p.node == stack.name and p.ok and p.ended_s >= after for p in result.pulls
        ):
            return
        for _ in range(PROBES):
            rec = await self.pull(stack, tag, fault=fault, injection=injection, role=PROBE)
            result.pulls.append(rec)
            if rec.ok:
                return
            await asyncio.sleep(1.0)

    # -- agents -------------------------------------------------------------------------

    async def crash_and_restart(self, stack: NodeStack) -> tuple[float, float]:
        """SIGKILL the node's agent and start it again at once; (killed at, healthy at)."""
        agent = self.agent(stack)
        agent.kill()
        killed = self.now()
        await asyncio.to_thread(agent.start)
        return killed, self.now()

    async def wait_for_bytes(
        self, stacks: Sequence[NodeStack], digest: str, threshold: int, until: asyncio.Task[Any]
    ) -> bool:
        """Wait until one of the agents' partial file of ``digest`` holds ``threshold`` bytes
        (True), or ``until`` is done first (False). A blob written as pieces (``.pieces``, a
        sparse file of the blob's size from the start) counts the bytes written into it."""
        hexd = digest.split(":", 1)[1]
        ingest = [self.agent(s).store / "ingest" for s in stacks]
        while not until.done():
            for folder in ingest:
                with contextlib.suppress(FileNotFoundError):
                    if (folder / f"{hexd}.partial").stat().st_size >= threshold:
                        return True
                with contextlib.suppress(FileNotFoundError):
                    if (folder / f"{hexd}.pieces").stat().st_blocks * 512 >= threshold:
                        return True
            await asyncio.sleep(0.005)
        return False

    async def swap_store(self, stack: NodeStack, store: Path, budget: int | None) -> None:
        """Restart the node's agent on another store (with a budget)."""
        agent = self.agent(stack)
        await asyncio.to_thread(agent.stop)
        agent.store = store
        if budget is None:
            agent.settings.pop("budget", None)
        else:
            agent.settings["budget"] = budget
        await asyncio.to_thread(agent.start)

    async def remove_from_containerd(self, stack: NodeStack, tag: str) -> None:
        """``ctr images rm --sync``: containerd's GC drops the image's content (its links)."""
        await stack.runtime().ctr.run("images", "rm", "--sync", self.ref(tag), time_limit=60)

    async def scan(self) -> tuple[int, list[str]]:
        return await asyncio.to_thread(self.scanner.scan, self.blob_dirs())
