"""``warmstart bench chaos``: faults injected into a cluster in a box while it pulls images.

Testbed: a :class:`~warmstart.testbed.netcluster.NetCluster` (default 3 nodes), the upstream
``docker-registry`` in its namespace, on every node a containerd and a ``warmstart agent`` with
the other agents as peers (:mod:`warmstart.bench.scaleout_nodes`, mode ``warmstart``). The
images are generated (:mod:`warmstart.testbed.layout`): a base layer with ``/bin/true`` and its
libraries (shared by all), one big layer of random bytes and a small one, so a pull moves real
bytes and a start really runs a container.

Every pull is ``ctr images pull`` through the node's agent (``hosts.toml``, as the runtime
does: :meth:`ContainerdRuntime.pull`), under a deadline; a pull whose body broke is retried up
to ``pull_retries`` times, as warmstart's runtime will (ctr itself does not). A start is a pull
and ``ctr run --rm`` of the image's ``/bin/true``. The fault classes and what is random about
them are described in :mod:`warmstart.bench.chaos_plan`; outcomes, rows and targets in
:mod:`warmstart.bench.chaos_report`.

After each class every blob file of every agent store and every containerd content store
(``<root>/io.containerd.content.v1.content/blobs/sha256/*``) is hashed again; a file whose
bytes do not hash to its name is a corrupt blob kept (counted in the class that left it).
Upstream bytes per class are the blob GET bodies in the registry's access log.

The soak: one more agent (on the root namespace's loopback, not in the cluster), its store
pre-warmed with 4 of the images; 8 clients pull them (manifest and blobs through ``/v2/``,
every body hashed; one blob read in 8 is given up after its first chunk) for ``soak_seconds``.
The agent's RSS and open fds are read from ``/proc`` at the start and end, both taken with the
clients idle and connected (after a warm-up pass), and every ``sample_every`` seconds under load.

Cleanup: the cluster's :meth:`NetCluster.close` (processes by PID, namespaces), the node stacks
(containers, containerd state, agents) and everything registered on the run's exit stack
(tmpfs mounts, the stand-in peer, the soak agent) are undone also on failure and on
SIGTERM/Ctrl-C (the cluster turns those into ``SystemExit`` while it is open).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from warmstart.bench.agent import upstream_blob_bytes
from warmstart.bench.chaos_plan import (
    AGENT_CRASH,
    AGENT_ONLY,
    DISK_CORRUPT,
    DISK_FULL,
    HOME_CRASH,
    HOT,
    PEER,
    STORE_BUDGET,
    STREAMED,
    UNCACHED,
    UPSTREAM_OUTAGE,
    WARM,
    WRONG_PEER,
    ChaosConfig,
    ChaosPlan,
    Injection,
    corrupt_offset,
    fake_peer_port,
    plan_chaos,
    storm_budget,
    tmpfs_bytes,
)
from warmstart.bench.chaos_report import (
    BASELINE,
    DURING,
    PROBE,
    SETUP,
    ChaosResults,
    ClassResult,
    InjectionRecord,
    PullRecord,
    Sample,
    SoakResult,
    is_broken_body,
)
from warmstart.bench.scaleout_nodes import AGENT_PORT, NodeStack, close_nodes, start_nodes
from warmstart.bench.scaleout_report import environment_info
from warmstart.bench.scaleout_types import WARMSTART
from warmstart.fetch import rendezvous
from warmstart.fetch.api import PEER_TOKEN_HEADER
from warmstart.oci import mediatypes as mt
from warmstart.runtime.api import ReplicaError
from warmstart.testbed.agent import AgentProcess
from warmstart.testbed.layout import LayerSpec, LayoutImage, push_layout, write_image
from warmstart.testbed.netcluster import NetCluster
from warmstart.testbed.registry import RegistryProcess
from warmstart.testbed.wrong_peer import WrongBytesPeer

Log = Callable[[str], None]
REPOSITORY = "chaos/app"
CONTENT_BLOBS = Path("io.containerd.content.v1.content") / "blobs" / "sha256"
RETRY_PAUSE = 0.5  # seconds before a retry of a pull whose body broke (times the attempt)
PROBES = 3  # pulls tried after a fault until one succeeds
SOAK_ABORT_ONE_IN = 8
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NO_ROOM = re.compile(r"no room for|budget", re.IGNORECASE)
_NO_SPACE = re.compile(r"no space left|disk is full|database or disk", re.IGNORECASE)


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
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

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
        (True), or ``until`` is done first (False)."""
        hexd = digest.split(":", 1)[1]
        partials = [self.agent(s).store / "ingest" / f"{hexd}.partial" for s in stacks]
        while not until.done():
            for partial in partials:
                with contextlib.suppress(FileNotFoundError):
                    if partial.stat().st_size >= threshold:
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


def _log_offset(agent: AgentProcess) -> int:
    try:
        return agent.log.stat().st_size
    except FileNotFoundError:
        return 0


def _log_count(agent: AgentProcess, offset: int, pattern: re.Pattern[str]) -> int:
    try:
        with open(agent.log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if pattern.search(line))


# -- the fault classes ----------------------------------------------------------------------


async def _set_link(run: Run, stack: NodeStack, on: bool) -> None:
    """Restart the node's agent with linking into containerd on (its default) or off."""
    agent = run.agent(stack)
    if on == ("containerd_link" not in agent.settings):
        return
    if on:
        agent.settings.pop("containerd_link", None)
    else:
        agent.settings["containerd_link"] = "off"
    await asyncio.to_thread(agent.restart)


async def agent_crash(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        try:
            await _agent_crash_once(run, inj, result)
        finally:
            await _set_link(run, run.stacks[inj.node], on=True)


async def _agent_crash_once(run: Run, inj: Injection, result: ClassResult) -> None:
    assert inj.image is not None and inj.twin is not None
    stack = run.stacks[inj.node]
    # streamed: containerd GETs every blob through the agent (for the twin too: same path)
    await _set_link(run, stack, on=inj.variant != STREAMED)
    twin = await run.pull(stack, inj.twin, fault=AGENT_CRASH, injection=inj.number, role=BASELINE)
    result.pulls.append(twin)
    digest, size = run.big(inj.image)
    threshold = int(size * inj.fraction)
    task = asyncio.create_task(
        run.pull(stack, inj.image, fault=AGENT_CRASH, injection=inj.number, role=DURING)
    )
    fired = await run.wait_for_bytes([stack], digest, threshold, task)
    start = end = None
    if fired:
        start, end = await run.crash_and_restart(stack)
        run.say(
            f"  agent on {stack.name} ({inj.variant}) killed at {inj.fraction:.0%} of "
            f"{digest[:19]} ({size >> 20} MiB), healthy again after {end - start:.1f} s"
        )
    rec = await task
    result.pulls.append(rec)
    result.injections.append(
        InjectionRecord(
            AGENT_CRASH, inj.number, stack.name, fired, start, end,
            {"variant": inj.variant, "fraction": inj.fraction, "blob": digest,
             "blob_bytes": size, "undisturbed_s": round(twin.seconds, 3),
             "disturbed_s": round(rec.seconds, 3), "attempts": rec.attempts},
        )
    )  # fmt: skip
    if fired:
        await run.probe(stack, inj.image, AGENT_CRASH, inj.number, result, after=end)


async def home_crash(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        assert inj.image is not None
        digest, size = run.big(inj.image)
        urls = run.agent_urls()
        home = rendezvous.home(digest, [rendezvous.node_key(u) for u in urls])
        victim = next(s for s in run.stacks if rendezvous.node_key(run.agent(s).url) == home)
        others = [s for s in run.stacks if s is not victim]
        tasks = [
            asyncio.create_task(
                run.pull(s, inj.image, fault=HOME_CRASH, injection=inj.number, role=DURING)
            )
            for s in others
        ]
        all_done = asyncio.create_task(asyncio.wait(tasks))
        fired = await run.wait_for_bytes(others, digest, int(size * inj.fraction), all_done)
        start = end = None
        if fired:
            start, end = await run.crash_and_restart(victim)
            run.say(
                f"  home of {digest[:19]} ({victim.name}) killed at {inj.fraction:.0%} while "
                f"{', '.join(s.name for s in others)} streamed it; healthy after "
                f"{end - start:.1f} s"
            )
        await all_done
        result.pulls.extend(t.result() for t in tasks)
        result.injections.append(
            InjectionRecord(
                HOME_CRASH, inj.number, victim.name, fired, start, end,
                {"fraction": inj.fraction, "blob": digest, "blob_bytes": size,
                 "streaming_nodes": [s.name for s in others]},
            )
        )  # fmt: skip
        if fired:
            await run.probe(victim, inj.image, HOME_CRASH, inj.number, result)


async def _raw_blob_reads(url: str, digest: str, attempts: int, pause: float = 0.2) -> list[str]:
    """GET one blob from an agent as a plain client, hashing each body: "ok", "WRONG" (a
    complete body with the wrong bytes: served corrupt) or "error: ..."; stops at "ok"."""
    outcomes: list[str] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        for _ in range(attempts):
            h = hashlib.sha256()
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        outcomes.append(f"error: HTTP {resp.status}")
                    else:
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            h.update(chunk)
                        good = f"sha256:{h.hexdigest()}" == digest
                        outcomes.append("ok" if good else "WRONG")
                        if good:
                            return outcomes
            except (aiohttp.ClientError, TimeoutError) as e:
                outcomes.append(f"error: {type(e).__name__}")
            await asyncio.sleep(pause)
    return outcomes


async def _put_peers(agent: AgentProcess, peers: Sequence[str]) -> None:
    headers = {PEER_TOKEN_HEADER: agent.peer_token} if agent.peer_token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.put(f"{agent.url}/peers", json={"peers": list(peers)}, headers=headers) as resp,
    ):
        body = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"PUT /peers on {agent.url} answered {resp.status}: {body[:200]}")


async def wrong_peer(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    sizes = {
        str(d): s
        for image in run.images.values()
        for d, s in zip(
            (image.config_digest, *image.layer_digests),
            (image.config_size, *image.layer_sizes),
            strict=True,
        )
    }
    for inj in injections:
        assert inj.image is not None
        stack = run.stacks[inj.node]
        agent = run.agent(stack)
        digest, size = run.big(inj.image)
        port = fake_peer_port(digest, run.agent_urls(), "127.0.0.1")
        peer = WrongBytesPeer(sizes, port=port, netns=stack.node.netns).start()
        run.cleanup.callback(peer.stop)
        original = list(agent.peers)
        start = run.now()
        await _put_peers(agent, [*original, peer.url])
        run.say(f"  {stack.name} lists a wrong-bytes peer {peer.url}, home of {digest[:19]}")
        blob_url = f"{agent.url}/v2/{REPOSITORY}/blobs/{digest}?ns={run.upstream.host}"
        try:
            rec, reads = await asyncio.gather(
                run.pull(stack, inj.image, fault=WRONG_PEER, injection=inj.number, role=DURING),
                _raw_blob_reads(blob_url, digest, attempts=4),
            )
        finally:
            await _put_peers(agent, original)
            peer.stop()
        end = run.now()
        result.pulls.append(rec)
        served = reads.count("WRONG")
        result.injections.append(
            InjectionRecord(
                WRONG_PEER, inj.number, stack.name, peer.gets > 0, start, end,
                {"blob": digest, "blob_bytes": size, "peer_gets": peer.gets,
                 "peer_asked": list(peer.asked),
                 "peer_heads": peer.heads, "wrong_bytes_sent": peer.bytes_sent,
                 "client_reads": reads, "corrupt_served": served},
            )
        )  # fmt: skip
        result.notes.append(
            f"#{inj.number}: stand-in peer sent {peer.bytes_sent / 2**20:.0f} MiB of wrong bytes "
            f"({peer.gets} GETs); a client reading the blob meanwhile got {', '.join(reads)}"
        )
        await run.probe(stack, inj.image, WRONG_PEER, inj.number, result, after=end)


async def _store_verify(store: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warmstart.cli.main", "store", "verify", "--store", str(store),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "store verify did not finish in 120 s"
    return proc.returncode if proc.returncode is not None else -1, out.decode(errors="replace")


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())


def _hash_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


async def disk_corrupt(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        assert inj.image is not None
        stack = run.stacks[inj.node]
        agent = run.agent(stack)
        result.pulls.append(
            await run.pull(stack, inj.image, fault=DISK_CORRUPT, injection=inj.number, role=SETUP)
        )
        if inj.variant == AGENT_ONLY:
            await run.remove_from_containerd(stack, inj.image)
        digest, size = run.layer(inj.image, inj.layer)
        hexd = digest.split(":", 1)[1]
        blob = agent.store / "blobs" / "sha256" / hexd
        theirs = stack.containerd.root / CONTENT_BLOBS / hexd
        try:
            links = blob.stat().st_nlink
        except FileNotFoundError:
            result.injections.append(
                InjectionRecord(DISK_CORRUPT, inj.number, stack.name, False,
                                detail={"variant": inj.variant, "why": "blob not stored"})
            )  # fmt: skip
            continue
        offset = corrupt_offset(size, inj.fraction)
        start = run.now()
        await asyncio.to_thread(_flip_byte, blob, offset)
        code, output = await _store_verify(agent.store)
        end = run.now()
        reported = hexd in output or digest in output
        removed = not blob.exists()
        _, bad = await run.scan()
        kept_after_verify = [b for b in bad if b not in run.corrupt_seen]
        advice = "also hard-linked into another store" in output
        gone_after = None
        if advice:
            # As an operator would: do what store verify says for containerd's name of the
            # file, and wait for containerd's GC to delete it (before that, a pull would find
            # the file and adopt it again).
            await stack.runtime().ctr.run("content", "rm", digest, time_limit=60)
            waited = time.monotonic()
            for _ in range(200):  # up to 10 s
                if not theirs.exists():
                    break
                await asyncio.sleep(0.05)
            gone_after = round(time.monotonic() - waited, 2) if not theirs.exists() else None
        run.say(
            f"  {inj.layer} layer {digest[:19]} on {stack.name} ({inj.variant}, {links} link(s))"
            f" corrupted at byte {offset}; store verify exit {code}: "
            f"{output.strip().splitlines()[-1] if output.strip() else '(no output)'}"
        )
        rec = await run.pull(stack, inj.image, fault=DISK_CORRUPT, injection=inj.number, role=PROBE)
        result.pulls.append(rec)
        now_ctd = await asyncio.to_thread(_hash_file, theirs)
        now_agent = await asyncio.to_thread(_hash_file, blob)
        content_ok = now_ctd == digest and now_agent in (None, digest)
        result.injections.append(
            InjectionRecord(
                DISK_CORRUPT, inj.number, stack.name, True, start, end,
                {"variant": inj.variant, "layer": inj.layer, "blob": digest, "offset": offset,
                 "links_before": links, "verify_exit": code, "verify_reported": reported,
                 "verify_removed": removed, "verify_output": output.strip()[-500:],
                 "corrupt_kept_after_verify": kept_after_verify,
                 "verify_said_linked": advice, "containerd_copy_gone_after_s": gone_after,
                 "next_pull_ok": rec.ok, "containerd_copy_ok": now_ctd == digest,
                 "agent_copy": "absent" if now_agent is None else
                 ("ok" if now_agent == digest else "corrupt")},
            )
        )  # fmt: skip
        linked_note = ""
        if kept_after_verify:
            linked_note = (
                f", containerd kept the same corrupt file ({len(kept_after_verify)} file(s)); "
                + (
                    f"verify said so and `ctr content rm` as it advises removed it "
                    f"({gone_after} s to GC)"
                    if advice and gone_after is not None
                    else "verify did not say so"
                    if not advice
                    else "`ctr content rm` did not remove it in 10 s"
                )
            )
        result.notes.append(
            f"#{inj.number} {inj.variant}: verify exit {code}, "
            f"{'reported' if reported else 'NOT reported'}, "
            f"{'removed' if removed else 'NOT removed'}{linked_note}; next pull "
            f"{'ok' if rec.ok else 'failed'}, containerd's copy "
            f"{'correct' if now_ctd == digest else 'absent' if now_ctd is None else 'CORRUPT'}"
        )
        if not content_ok:
            result.notes.append(f"#{inj.number}: containerd keeps a corrupt copy of {digest[:19]}")
        await run.probe(stack, inj.image, DISK_CORRUPT, inj.number, result, after=end)


async def upstream_outage(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    plan, cfg = run.plan, run.config
    hot_tag, warm_tag, none_tag = (plan.outage_images[t] for t in (HOT, WARM, UNCACHED))
    hot_node, warm_node = (run.stacks[plan.outage_holders[t]] for t in (HOT, WARM))
    result.pulls.append(
        await run.pull(hot_node, hot_tag, fault=UPSTREAM_OUTAGE, injection=1, role=SETUP)
    )
    result.pulls.append(
        await run.pull(warm_node, warm_tag, fault=UPSTREAM_OUTAGE, injection=1, role=SETUP)
    )
    await run.remove_from_containerd(warm_node, warm_tag)
    have: dict[tuple[str, str], str] = {(hot_node.name, hot_tag): HOT}
    have[(warm_node.name, warm_tag)] = WARM
    await asyncio.to_thread(run.upstream.stop)
    start = run.now()
    run.say(f"  upstream registry stopped for {cfg.outage_seconds:.0f} s")
    rounds = 0

    async def one_start(stack: NodeStack, tag: str) -> PullRecord:
        tier = UNCACHED if tag == none_tag else have.get((stack.name, tag), PEER)
        rec = await run.pull(
            stack, tag, fault=UPSTREAM_OUTAGE, injection=1, role=DURING, start=True, tier=tier
        )
        if rec.ok:
            have[(stack.name, tag)] = HOT
        return rec

    try:
        # Rounds of starts (every node, every image at once) while the outage lasts; a round
        # is begun only if it should end in time, so the outage is not stretched much.
        last = 0.0
        while rounds == 0 or run.now() + last < start + cfg.outage_seconds:
            rounds += 1
            began = run.now()
            result.pulls.extend(
                await asyncio.gather(
                    *(one_start(s, t) for s in run.stacks for t in (hot_tag, warm_tag, none_tag))
                )
            )
            last = run.now() - began
            await asyncio.sleep(min(1.0, max(0.0, start + cfg.outage_seconds - run.now())))
        await asyncio.sleep(max(0.0, start + cfg.outage_seconds - run.now()))
    finally:
        await asyncio.to_thread(run.upstream.start, same_port=True)
    end = run.now()
    run.say(f"  upstream registry back after {end - start:.1f} s ({rounds} rounds of starts)")
    result.injections.append(
        InjectionRecord(
            UPSTREAM_OUTAGE, 1, "all", True, start, end,
            {"seconds": round(end - start, 2), "rounds": rounds,
             "recovery_nodes": [s.name for s in run.stacks]},
        )
    )  # fmt: skip
    for rec in await asyncio.gather(
        *(
            run.pull(s, none_tag, fault=UPSTREAM_OUTAGE, injection=1, role=PROBE, start=True)
            for s in run.stacks
        )
    ):
        result.pulls.append(rec)


async def _storm(
    run: Run,
    inj: Injection,
    result: ClassResult,
    store: Path,
    budget: int | None,
    pattern: re.Pattern[str],
    what: str,
) -> None:
    stack = run.stacks[inj.node]
    agent = run.agent(stack)
    original = agent.store
    await asyncio.to_thread(stack.reset_containerd)  # containerd holds none of the storm's images
    await run.swap_store(stack, store, budget)  # scanned as the node's agent store meanwhile
    try:
        offset = _log_offset(agent)
        start = run.now()
        recs = await asyncio.gather(
            *(run.pull(stack, tag, fault=inj.fault, injection=1, role=DURING) for tag in inj.images)
        )
        end = run.now()
        result.pulls.extend(recs)
        hits = _log_count(agent, offset, pattern)
        result.injections.append(
            InjectionRecord(
                inj.fault, 1, stack.name, hits > 0, start, end,
                {"images": list(inj.images), "budget": budget, "agent_log_lines": hits,
                 "store_bytes_after": _du(store)},
            )
        )  # fmt: skip
        result.notes.append(
            f"{len(inj.images)} pulls at once on {stack.name}; {hits} agent log lines about {what}"
        )
        await run.probe(stack, inj.images[0], inj.fault, 1, result, after=end)
        _, bad = await run.scan()
        _count_corrupt(run, result, bad)
    finally:
        await run.swap_store(stack, original, None)


def _du(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


async def store_budget(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        budget = storm_budget(run.plan, inj.images)
        store = run.work / f"budget-store-{inj.node}"
        run.say(f"  {run.stacks[inj.node].name}: agent restarted with a {budget >> 20} MiB budget")
        try:
            await _storm(run, inj, result, store, budget, _NO_ROOM, "the budget")
        finally:
            shutil.rmtree(store, ignore_errors=True)


def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "warmstart-chaos", str(path)],
        check=True, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def _unmount(path: Path) -> None:
    if not os.path.ismount(path):
        return
    proc = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


async def disk_full(run: Run, injections: Sequence[Injection], result: ClassResult) -> None:
    for inj in injections:
        size = tmpfs_bytes(run.plan, inj.images)
        mount = run.work / f"tmpfs-{inj.node}"
        await asyncio.to_thread(_mount_tmpfs, mount, size)
        agent = run.agent(run.stacks[inj.node])

        def release(mount: Path = mount, agent: AgentProcess = agent) -> None:
            if agent.store.is_relative_to(mount):
                agent.stop()  # (an interrupted run) the agent keeps the mount busy
            _unmount(mount)

        run.cleanup.callback(release)
        run.say(f"  {run.stacks[inj.node].name}: agent store on a {size >> 20} MiB tmpfs")
        try:
            await _storm(run, inj, result, mount / "store", None, _NO_SPACE, "no space")
        finally:
            await asyncio.to_thread(_unmount, mount)
            shutil.rmtree(mount, ignore_errors=True)


def _count_corrupt(run: Run, result: ClassResult, bad: list[str]) -> None:
    """Count the corrupt files a scan found that the last scan did not (a class is charged
    with what it left behind, not with what an earlier class did)."""
    new = [b for b in bad if b not in run.corrupt_seen]
    run.corrupt_seen = set(bad)
    result.corrupt_kept += len(new)
    result.corrupt_files += new


CLASSES: dict[str, Callable[[Run, Sequence[Injection], ClassResult], Awaitable[None]]] = {
    AGENT_CRASH: agent_crash,
    HOME_CRASH: home_crash,
    WRONG_PEER: wrong_peer,
    DISK_CORRUPT: disk_corrupt,
    UPSTREAM_OUTAGE: upstream_outage,
    STORE_BUDGET: store_budget,
    DISK_FULL: disk_full,
}


async def run_class(run: Run, fault: str) -> ClassResult:
    injections = run.plan.of(fault)
    result = ClassResult(fault, planned=len(injections))
    run.say(f"{fault}: {len(injections)} injection(s)")
    mark = await asyncio.to_thread(run.upstream.mark)
    try:
        await CLASSES[fault](run, injections, result)
    except Exception as e:  # a harness failure: report it, go on with the next class
        result.error = f"{type(e).__name__}: {e}"
        run.say(f"  {fault} stopped: {result.error}")
    finally:
        if not run.upstream.running:
            await asyncio.to_thread(run.upstream.start, same_port=True)
    checked, bad = await run.scan()
    _count_corrupt(run, result, bad)
    earlier = len([b for b in bad if b not in result.corrupt_files])
    if earlier:
        result.notes.append(f"{earlier} corrupt file(s) from earlier classes still kept")
    sent = await asyncio.to_thread(run.upstream.requests, mark)
    result.upstream_bytes = upstream_blob_bytes(sent)
    result.upstream_direct_bytes = upstream_blob_bytes(
        r for r in sent if r.user_agent.startswith("containerd")
    )
    run.say(
        f"  {fault}: {checked} blob files re-hashed, {result.corrupt_kept} corrupt; upstream "
        f"{result.upstream_bytes / 2**20:.0f} MiB, of which containerd fetched "
        f"{result.upstream_direct_bytes / 2**20:.0f} MiB itself"
    )
    return result


# -- the soak --------------------------------------------------------------------------------


def read_proc(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, open file descriptors) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class _SoakBlob:
    digest: str
    size: int


async def _soak_client(
    session: aiohttp.ClientSession,
    base: str,
    pulls: Sequence[tuple[str, list[_SoakBlob]]],
    rng: random.Random,
    stop: asyncio.Event,
    soak: SoakResult,
    *,
    once: bool,
) -> None:
    """Pull images (manifest by digest, then every blob, bodies hashed) until ``stop``; with
    ``once`` each image once, in order, with no aborted reads."""
    order = list(pulls)
    while not stop.is_set():
        if not once:
            rng.shuffle(order)
        for manifest, blobs in order:
            if stop.is_set():
                return
            await _soak_get(session, f"{base}/manifests/{manifest}", manifest, soak, False)
            for blob in blobs:
                abort = not once and rng.randrange(SOAK_ABORT_ONE_IN) == 0
                await _soak_get(session, f"{base}/blobs/{blob.digest}", blob.digest, soak, abort)
            soak.pulls += 1
        if once:
            return


async def _soak_get(
    session: aiohttp.ClientSession, url: str, digest: str, soak: SoakResult, abort: bool
) -> None:
    headers = {"Accept": ", ".join(mt.MANIFEST_ACCEPT)} if "/manifests/" in url else {}
    h = hashlib.sha256()
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status != 200:
                soak.errors += 1
                if len(soak.first_errors) < 5:
                    soak.first_errors.append(f"{url}: HTTP {resp.status}")
                await resp.read()
                return
            if "/blobs/" in url:
                soak.blob_gets += 1
            async for chunk in resp.content.iter_chunked(1 << 20):
                soak.bytes += len(chunk)
                if abort:
                    soak.aborted_gets += 1
                    resp.close()
                    return
                h.update(chunk)
        if f"sha256:{h.hexdigest()}" != digest:
            soak.corrupt_served += 1
    except (aiohttp.ClientError, TimeoutError) as e:
        soak.errors += 1
        if len(soak.first_errors) < 5:
            soak.first_errors.append(f"{url}: {type(e).__name__}: {e}")


async def _quiet_sample(pid: int, t0: float) -> Sample:
    await asyncio.sleep(0.5)  # let responses and closes settle
    rss, fds = await asyncio.to_thread(read_proc, pid)
    return Sample(round(time.monotonic() - t0, 2), rss, fds)


async def run_soak(
    agent: AgentProcess,
    images: Sequence[LayoutImage],
    registry: str,
    config: ChaosConfig,
    seconds: float,
    log: Log,
) -> SoakResult:
    assert agent.pid is not None
    pid = agent.pid
    soak = SoakResult(seconds, config.soak_clients, len(images))
    pulls = [
        (
            str(i.manifest_digest),
            [_SoakBlob(str(i.config_digest), i.config_size)]
            + [_SoakBlob(str(d), s) for d, s in zip(i.layer_digests, i.layer_sizes, strict=True)],
        )
        for i in images
    ]
    base = f"{agent.url}/v2/{REPOSITORY}"
    rng = random.Random(config.seed)
    stop = asyncio.Event()
    t0 = time.monotonic()
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=120),
            auto_decompress=False,
        )
        for _ in range(config.soak_clients)
    ]
    try:
        # Warm-up: every client pulls every image once (connections open, caches filled).
        await asyncio.gather(
            *(_soak_client(s, base, pulls, rng, stop, soak, once=True) for s in sessions)
        )
        soak.warmup_s = time.monotonic() - t0
        soak.start = await _quiet_sample(pid, t0)
        log(f"  soak: start RSS {soak.start.rss_kib / 1024:.1f} MiB, {soak.start.fds} fds")

        async def sampler() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), config.sample_every)
                if stop.is_set():
                    return
                rss, fds = await asyncio.to_thread(read_proc, pid)
                soak.samples.append(Sample(round(time.monotonic() - t0, 2), rss, fds))

        clients = [
            asyncio.create_task(
                _soak_client(s, base, pulls, random.Random(rng.random()), stop, soak, once=False)
            )
            for s in sessions
        ]
        sampling = asyncio.create_task(sampler())
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*clients, sampling)
        # The same state as at the start: every client connected and idle.
        stop.clear()
        await asyncio.gather(
            *(
                _soak_get(s, f"{base}/manifests/{pulls[0][0]}", pulls[0][0], soak, False)
                for s in sessions
            )
        )
        soak.end = await _quiet_sample(pid, t0)
        log(
            f"  soak: end RSS {soak.end.rss_kib / 1024:.1f} MiB, {soak.end.fds} fds; "
            f"{soak.pulls} pulls, {soak.bytes / 2**30:.1f} GiB, {soak.errors} errors"
        )
    finally:
        for s in sessions:
            await s.close()
    soak.seconds = seconds
    return soak


def start_soak_agent(run: Run) -> AgentProcess:
    """An agent on the root namespace's loopback (not in the cluster), its store pre-warmed
    with the soak's images before any fault runs."""
    agent = run.net.track(
        AgentProcess(
            run.work / "soak-agent",
            upstreams={run.upstream.host: run.upstream.url},
            settings={"node_id": "soak", "containerd_link": "off"},
        )
    )
    for tag in run.plan.soak_images:
        code, body = agent.prewarm(run.ref(tag))
        if code != 200:
            raise RuntimeError(f"pre-warming the soak agent with {tag} answered {code}: {body}")
    run.extra_stores["soak/agent"] = agent.store
    return agent


# -- all of it --------------------------------------------------------------------------------


def keep_logs(stacks: Sequence[NodeStack], dest: Path) -> None:
    """Copy every node's agent and containerd log to ``dest`` (the nodes' dirs go away)."""
    dest.mkdir(parents=True, exist_ok=True)
    for s in stacks:
        for name, log in (
            ("agent", s.agent.log if s.agent else None),
            ("containerd", s.containerd.log),
        ):
            if log is not None and log.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(log, dest / f"{s.name}-{name}.log")


def cpu_sha_ni() -> int:
    """Lines of /proc/cpuinfo with the sha_ni flag (what ``grep -c sha_ni`` counts)."""
    try:
        with open("/proc/cpuinfo") as f:
            return sum(1 for line in f if "sha_ni" in line)
    except OSError:
        return 0


async def _main(run: Run, soak_agent: AgentProcess, results: ChaosResults) -> None:
    cfg = run.config
    deadline = run.t0 + cfg.time_limit
    soak_reserve = cfg.soak_seconds + 15  # the soak, its warm-up and the last samples
    for fault in CLASSES:
        if fault not in cfg.classes:
            continue
        if time.monotonic() > deadline - soak_reserve:
            results.skipped.append(fault)
            run.say(f"{fault}: skipped (time limit)")
            continue
        results.classes.append(await run_class(run, fault))
    left = deadline - time.monotonic() - 10
    seconds = max(5.0, min(cfg.soak_seconds, left))
    run.say(
        f"soak: {cfg.soak_clients} clients, {len(run.plan.soak_images)} images, {seconds:.0f} s"
    )
    soak_images = [run.images[t] for t in run.plan.soak_images]
    results.soak = await run_soak(soak_agent, soak_images, run.upstream.host, cfg, seconds, run.say)
    _, bad = await run.scan()
    new = [b for b in bad if b not in run.corrupt_seen]
    if new:
        results.soak.first_errors.append(f"corrupt blob files after the soak: {', '.join(new)}")


def run_chaos(config: ChaosConfig, work: Path, log: Log = print) -> ChaosResults:
    plan = plan_chaos(config)
    results = ChaosResults()
    t0 = time.monotonic()
    stacks: list[NodeStack] = []
    # The exit stack closes first (nodes, mounts, the stand-in peer, the soak agent), then the
    # cluster (its tracked processes, then the namespaces).
    with (
        NetCluster(config.nodes, rate=config.rate, lan_rate=config.lan_rate) as net,
        contextlib.ExitStack() as cleanup,
    ):
        upstream = net.start_upstream_registry(work / "upstream")
        images = build_images(plan, work / "layout", upstream.host, log)
        stacks = start_nodes(net, WARMSTART, upstream)
        cleanup.callback(close_nodes, stacks)
        cleanup.callback(keep_logs, stacks, work / "logs")
        run = Run(config, plan, net, upstream, stacks, images, work, log, t0, cleanup)
        soak_agent = start_soak_agent(run)
        cleanup.callback(soak_agent.cleanup)
        run.say(
            f"cluster up: {config.nodes} nodes ({', '.join(s.node.lan_addr for s in stacks)}), "
            f"agents on port {AGENT_PORT}, upstream {upstream.url}"
        )
        asyncio.run(_main(run, soak_agent, results))
    results.params = {
        "seed": config.seed,
        "nodes": config.nodes,
        "quick": config.quick,
        "rate": config.rate,
        "lan_rate": config.lan_rate,
        "soak_seconds": config.soak_seconds,
        "outage_seconds": config.outage_seconds,
        "layer_mib": list(config.layer_mib),
        "pull_timeout": config.pull_timeout,
        "pull_retries": config.pull_retries,
        "flat_tolerance": config.flat_tolerance,
        "time_limit": config.time_limit,
        "images": {s.tag: s.big_bytes for s in plan.images},
        "wall_s": round(time.monotonic() - t0, 1),
    }
    results.environment = environment_info({"sha_ni": cpu_sha_ni()})
    return results


def write_outputs(
    results: ChaosResults, json_path: Path | None, out_dir: Path | None
) -> list[Path]:
    from warmstart.bench.chaos_report import markdown, to_json

    written: list[Path] = []
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(to_json(results), indent=2) + "\n")
        written.append(json_path)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "chaos.md"
        path.write_text(markdown(results))
        written.append(path)
    return written
