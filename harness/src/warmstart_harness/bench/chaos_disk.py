"""The storage fault classes of ``warmstart bench chaos``: a blob file corrupted on disk, a
store over its budget, a disk that fills up; and the count of corrupt files a class leaves
behind. Each injects its faults into a :class:`~warmstart_harness.bench.chaos_run.Run` and
records the pulls around them (the process and network classes are in
:mod:`warmstart_harness.bench.chaos_faults`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from warmstart_harness.bench.chaos_plan import (
    AGENT_ONLY,
    DISK_CORRUPT,
    Injection,
    corrupt_offset,
    storm_budget,
    tmpfs_bytes,
)
from warmstart_harness.bench.chaos_report import (
    DURING,
    PROBE,
    SETUP,
    ClassResult,
    InjectionRecord,
)
from warmstart_harness.bench.chaos_run import CONTENT_BLOBS, Run
from warmstart_harness.testbed.agent import AgentProcess

_NO_ROOM = re.compile(r"no room for|budget", re.IGNORECASE)
_NO_SPACE = re.compile(r"no space left|disk is full|database or disk", re.IGNORECASE)


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
        count_corrupt(run, result, bad)
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


def count_corrupt(run: Run, result: ClassResult, bad: list[str]) -> None:
    """Count the corrupt files a scan found that the last scan did not (a class is charged
    with what it left behind, not with what an earlier class did)."""
    new = [b for b in bad if b not in run.corrupt_seen]
    run.corrupt_seen = set(bad)
    result.corrupt_kept += len(new)
    result.corrupt_files += new
