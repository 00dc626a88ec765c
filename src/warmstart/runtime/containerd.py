"""The real :class:`~warmstart.runtime.interfaces.Runtime`: containerd 1.6 + runc, driven with ``ctr``.

containerd 1.6 has no pull RPC (ctr fetches in its own process) and no Python client that works
with current protobuf, so everything runs ``ctr`` against the node's socket and namespace:

- ``pull``: ``ctr images pull --hosts-dir DIR REF`` with a generated ``DIR/<registry>/hosts.toml``
  that sends the pull through the node's agent first (the registry itself is the fallback).
  ctr prints ``unpacking <platform> <digest>...`` and ``done: <Go duration>`` for the unpack;
  the fetch is the rest of the wall time. A pull whose transfer broke mid-body (ctr says
  ``unexpected EOF``, ``failed to read expected number of bytes`` or ``connection reset by
  peer``: :func:`is_transient_pull_error`) is tried again after a short backoff, up to
  ``pull_attempts`` times in all; any other failure is reported at once.
- ``create``: ``ctr containers create [--net-host] --env PORT=.. --label .. IMAGE ID [ARGS]``;
  ``start``: ``ctr tasks start -d --log-uri file:///LOG ID`` (stdout and stderr to one file).
- ``stop``: ``ctr tasks kill`` SIGTERM, SIGKILL after the timeout; the exit code is read by
  deleting the stopped task (ctr warns ``exit with non-zero exit code N``) and then kept as a
  container label, so ``status`` still answers after the task is gone and across restarts.
- ``delete``: task (killed if needed), container and its rootfs snapshot, and the log file.

containerd hard-codes ``/run/containerd/{s,fifo,runc}``: every containerd on a machine shares
them, so container ids carry ``id_prefix`` (unique per node) before the replica id.

The parsers and argument builders at the top are pure; :class:`ContainerdRuntime` is the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.backoff import Backoff
from warmstart.containerd.ctr import Ctr, CtrError, CtrResult, last_error_line, pull_args
from warmstart.containerd.hosts import (
    HostsConfigError,
    HostsFile,
    checked_registry,
    mirror_configs,
    mirror_host,
    upstream_server,
    write_hosts_dir,
)
from warmstart.containerd.pull_output import parse_pull_output
from warmstart.oci.errors import InvalidReference
from warmstart.oci.reference import Reference
from warmstart.runtime.interfaces import (
    DEFAULT_STOP_TIMEOUT,
    ImageNotPresent,
    ImagePullError,
    Mount,
    PullTiming,
    Replica,
    ReplicaError,
    ReplicaExists,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    RuntimeUnavailable,
)

LABEL_REPLICA = "io.warmstart.replica"
LABEL_SPEC = "io.warmstart.spec"
LABEL_EXIT_CODE = "io.warmstart.exit-code"
MAX_LABEL_VALUE = 4096  # containerd's limit on a label (key + value)
MAX_ID_LENGTH = 76  # containerd's identifiers.Validate
_ID = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
_NONZERO_EXIT = re.compile(r"exit with non-zero exit code (\d+)")
_NOT_FOUND = re.compile(r"not found", re.IGNORECASE)
_EXISTS = re.compile(r"already exists", re.IGNORECASE)
_POLL = 0.05
_KILL_WAIT = 10.0  # after SIGKILL
PULL_ATTEMPTS = 3
PULL_RETRY_DELAY = 0.5  # before the 2nd attempt; doubled before each next one
# What ctr says when a blob's body broke off mid-transfer (the mirror or the network dropped
# the connection): worth another attempt. Anything else (not found, unauthorized, a digest that
# does not match, containerd not answering) would fail the same way again.
TRANSIENT_PULL_ERRORS = (
    "unexpected eof",
    "failed to read expected number of bytes",
    "connection reset by peer",
)

log = logging.getLogger(__name__)


# -- pure helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    id: str
    pid: int
    status: str  # containerd's: CREATED, RUNNING, STOPPED, PAUSED, PAUSING, UNKNOWN


def parse_tasks(text: str) -> dict[str, TaskRow]:
    """The rows of ``ctr tasks ls`` (``TASK PID STATUS``), by task (= container) id."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[1].isdigit():
            out[parts[0]] = TaskRow(parts[0], int(parts[1]), parts[2].upper())
    return out


def task_state(row: TaskRow) -> ReplicaState:
    if row.status == "STOPPED":
        return ReplicaState.EXITED
    if row.status == "CREATED":
        return ReplicaState.CREATED
    return ReplicaState.RUNNING  # RUNNING, PAUSED, PAUSING; UNKNOWN is treated as alive


def exit_code_from_delete(stderr: str) -> int:
    """``ctr tasks delete`` prints a warning only for a non-zero exit code."""
    m = _NONZERO_EXIT.search(stderr)
    return int(m.group(1)) if m else 0


def container_id(prefix: str, replica_id: str) -> str:
    """``<prefix>-<replica id>``, checked against containerd's identifier rules."""
    cid = f"{prefix}-{replica_id}"
    if not _ID.match(cid) or len(cid) > MAX_ID_LENGTH:
        raise ReplicaError(
            f"invalid replica id {replica_id!r}: letters, digits and inner . _ -; "
            f"at most {MAX_ID_LENGTH - len(prefix) - 1} characters"
        )
    return cid


def mount_arg(mount: Mount) -> str:
    options = "rbind:ro" if mount.read_only else "rbind:rw"
    return f"type=bind,src={mount.source},dst={mount.target},options={options}"


def spec_label(spec: ReplicaSpec) -> str | None:
    """The spec as JSON for a container label (``None`` if too long for one)."""
    data = {
        "id": spec.id,
        "image": spec.image,
        "port": spec.port,
        "env": dict(spec.env),
        "args": list(spec.args),
        "host_network": spec.host_network,
        "mounts": [[m.source, m.target, m.read_only] for m in spec.mounts],
    }
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return text if len(text) + len(LABEL_SPEC) < MAX_LABEL_VALUE else None


def spec_from_labels(labels: dict[str, str], image: str, fallback_id: str) -> ReplicaSpec:
    raw = labels.get(LABEL_SPEC)
    if raw:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(raw)
            return ReplicaSpec(
                id=data["id"],
                image=data["image"],
                port=int(data["port"]),
                env=dict(data["env"]),
                args=tuple(data["args"]),
                host_network=bool(data["host_network"]),
                mounts=tuple(Mount(s, t, bool(ro)) for s, t, ro in data["mounts"]),
            )
    return ReplicaSpec(id=labels.get(LABEL_REPLICA, fallback_id), image=image)


def create_args(
    spec: ReplicaSpec, cid: str, reference: str, snapshotter: str | None = None
) -> list[str]:
    args = ["containers", "create"]
    if snapshotter:
        args += ["--snapshotter", snapshotter]
    if spec.host_network:
        args.append("--net-host")
    for key, value in sorted(spec.environment().items()):
        args += ["--env", f"{key}={value}"]
    args += ["--label", f"{LABEL_REPLICA}={spec.id}"]
    label = spec_label(spec)
    if label is not None:
        args += ["--label", f"{LABEL_SPEC}={label}"]
    for mount in spec.mounts:
        args += ["--mount", mount_arg(mount)]
    # "--": ctr's flag parser reorders arguments, so an arg such as "-c" would become a flag.
    return [*args, "--", reference, cid, *spec.args]


def is_transient_pull_error(stderr: str) -> bool:
    """Whether a failed ``ctr images pull`` broke mid-transfer (try again) rather than for a
    reason that another attempt would meet too."""
    text = stderr.lower()
    return any(marker in text for marker in TRANSIENT_PULL_ERRORS)


def pull_retry_delay(attempt: int, base: float = PULL_RETRY_DELAY) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): base, 2 x base, ..."""
    return Backoff(base).ceiling(attempt - 1)


# -- the driver ----------------------------------------------------------------------------------


@dataclass
class ContainerdRuntime:
    """Replicas in one containerd namespace, pulled through the node's agent.

    ``id_prefix`` must be unique per node on the machine (containerd instances share
    ``/run/containerd``). ``work_dir`` holds the generated hosts dir and the replicas' logs.
    Without ``agent_url`` pulls go straight to the registries. ``insecure_registries`` are
    reached over plain HTTP; ``servers`` overrides a registry's URL (``{"r.io": "http://..."}``).
    """

    ctr: Ctr
    work_dir: Path
    id_prefix: str
    agent_url: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    servers: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    snapshotter: str | None = None
    pull_timeout: float = 1800.0  # for the pull as a whole, every attempt included
    ctr_timeout: float = 60.0
    pull_attempts: int = PULL_ATTEMPTS
    pull_retry_delay: float = PULL_RETRY_DELAY
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        if not _ID.match(self.id_prefix) or len(self.id_prefix) > MAX_ID_LENGTH // 2:
            raise ValueError(f"invalid id prefix {self.id_prefix!r}")
        self.work_dir = Path(self.work_dir)

    @property
    def hosts_dir(self) -> Path:
        return self.work_dir / "hosts"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    def log_path(self, cid: str) -> Path:
        return self.log_dir / f"{cid}.log"

    def container_id(self, replica_id: str) -> str:
        return container_id(self.id_prefix, replica_id)

    async def _ctr(self, *args: str, time_limit: float | None = None) -> CtrResult:
        try:
            return await self.ctr.run(*args, time_limit=time_limit or self.ctr_timeout)
        except CtrError as e:
            raise RuntimeUnavailable(str(e)) from None
        except TimeoutError:
            raise RuntimeUnavailable(f"ctr {' '.join(args[:2])} did not answer in time") from None

    async def _checked(self, *args: str) -> CtrResult:
        result = await self._ctr(*args)
        if result.returncode != 0:
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            if _NOT_FOUND.search(reason):
                raise ReplicaNotFound(f"ctr {' '.join(args[:2])}: {reason}")
            raise RuntimeUnavailable(f"ctr {' '.join(args[:2])} failed: {reason}")
        return result

    # -- pull ---------------------------------------------------------------------------------

    def hosts_file(self, registry: str) -> HostsFile:
        """The ``hosts.toml`` a pull from ``registry`` uses: for ``ctr --hosts-dir``, or for a
        CRI plugin whose ``config_path`` is where it is written."""
        insecure = {checked_registry(r) for r in self.insecure_registries}
        servers = {checked_registry(k): v for k, v in self.servers.items()}
        if self.agent_url is not None:
            # the pull names the registry canonically: its first file is the one ctr reads
            return mirror_configs(
                [registry], mirror_host(self.agent_url), insecure=insecure, servers=servers
            )[0]
        server = servers.get(registry) or upstream_server(registry, registry in insecure)
        return HostsFile(registry, server, (mirror_host(server, dial_timeout=None),))

    async def pull(self, reference: str) -> PullTiming:
        try:
            ref = Reference.parse(reference)
            write_hosts_dir(self.hosts_dir, [self.hosts_file(ref.registry)])
        except (InvalidReference, HostsConfigError) as e:
            raise ImagePullError(f"cannot pull {reference!r}: {e}") from None
        name = str(ref)
        args = pull_args(name, self.hosts_dir, self.platform, self.snapshotter)
        too_long = f"pulling {name} took over {self.pull_timeout:.0f}s"
        started = self.clock()
        left = self.pull_timeout
        attempts = max(self.pull_attempts, 1)
        for attempt in range(1, attempts + 1):
            try:
                result = await self.ctr.run(*args, time_limit=left)
            except CtrError as e:
                raise RuntimeUnavailable(str(e)) from None
            except TimeoutError:
                raise ImagePullError(too_long) from None
            if result.returncode == 0:
                break
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            if not is_transient_pull_error(result.stderr):
                raise ImagePullError(f"pulling {name} failed: {reason}")
            if attempt == attempts:
                raise ImagePullError(f"pulling {name} failed {attempts} times, last: {reason}")
            delay = pull_retry_delay(attempt, self.pull_retry_delay)
            log.warning(
                "pulling %s broke mid-transfer (%s); attempt %d of %d in %.1f s",
                name, reason, attempt + 1, attempts, delay,
            )  # fmt: skip
            await self.sleep(delay)
            left = self.pull_timeout - (self.clock() - started)
            if left <= 0:
                raise ImagePullError(too_long)
        total = self.clock() - started
        parsed = parse_pull_output(result.stdout)
        unpack = min(parsed.unpack_seconds, total)
        return PullTiming(name, parsed.digest, total - unpack, unpack, total, attempt)

    # -- lifecycle ----------------------------------------------------------------------------

    def _image_name(self, image: str) -> str:
        try:
            return str(Reference.parse(image))
        except InvalidReference as e:
            raise ReplicaError(f"invalid image reference {image!r}: {e}") from None

    async def create(self, spec: ReplicaSpec, *, pull: PullTiming | None = None) -> Replica:
        cid = self.container_id(spec.id)
        image = self._image_name(spec.image)
        started = self.clock()
        result = await self._ctr(*create_args(spec, cid, image, self.snapshotter))
        elapsed = self.clock() - started
        if result.returncode != 0:
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            if _EXISTS.search(reason):
                raise ReplicaExists(f"replica {spec.id!r} exists ({cid})")
            if _NOT_FOUND.search(reason) and "image" in reason:
                raise ImageNotPresent(f"{image} is not on this node: pull it first ({reason})")
            raise RuntimeUnavailable(f"creating replica {spec.id} failed: {reason}")
        return Replica(spec, cid).with_timings(pull=pull, create_seconds=elapsed)

    async def start(self, replica: Replica) -> Replica:
        log = self.log_path(replica.container_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        started = self.clock()
        result = await self._ctr(
            "tasks", "start", "-d", "--log-uri", log.resolve().as_uri(), replica.container_id
        )
        elapsed = self.clock() - started
        if result.returncode != 0:
            reason = last_error_line(result.stderr) or f"exit status {result.returncode}"
            if _NOT_FOUND.search(reason):
                raise ReplicaNotFound(f"replica {replica.id}: {reason}")
            # A failed start can leave a task in CREATED or STOPPED: remove it, keep the error.
            with contextlib.suppress(ReplicaError):
                await self._ctr("tasks", "delete", "-f", replica.container_id)
            raise ReplicaError(f"starting replica {replica.id} failed: {reason}")
        return replica.with_timings(start_seconds=elapsed)

    async def _task(self, cid: str) -> TaskRow | None:
        result = await self._checked("tasks", "ls")
        return parse_tasks(result.stdout).get(cid)

    async def _labels(self, cid: str) -> tuple[dict[str, str], str]:
        """The container's labels and image; :class:`ReplicaNotFound` if there is none."""
        result = await self._checked("containers", "info", cid)
        try:
            info = json.loads(result.stdout)
        except ValueError:
            raise RuntimeUnavailable(f"ctr containers info {cid}: not JSON") from None
        return dict(info.get("Labels") or {}), str(info.get("Image") or "")

    async def _reap(self, cid: str) -> int | None:
        """Delete the stopped task; keep and return its exit code."""
        result = await self._ctr("tasks", "delete", cid)
        if result.returncode != 0:
            return None  # someone else reaped it: the label says
        code = exit_code_from_delete(result.stderr)
        await self._checked("containers", "label", cid, f"{LABEL_EXIT_CODE}={code}")
        return code

    async def status(self, replica: Replica) -> ReplicaStatus:
        cid = replica.container_id
        row = await self._task(cid)
        if row is not None:
            state = task_state(row)
            if state is not ReplicaState.EXITED:
                return ReplicaStatus(
                    state, None, row.pid if state is ReplicaState.RUNNING else None
                )
            code = await self._reap(cid)
            if code is not None:
                return ReplicaStatus(ReplicaState.EXITED, code)
        try:
            labels, _ = await self._labels(cid)
        except ReplicaNotFound:
            raise ReplicaNotFound(f"no replica {replica.id!r} on this node") from None
        recorded = labels.get(LABEL_EXIT_CODE)
        if recorded is not None and recorded.lstrip("-").isdigit():
            return ReplicaStatus(ReplicaState.EXITED, int(recorded))
        return ReplicaStatus(ReplicaState.CREATED)

    async def _wait_exit(self, cid: str, seconds: float) -> bool:
        deadline = self.clock() + seconds
        while True:
            row = await self._task(cid)
            if row is None or row.status == "STOPPED":
                return True
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(_POLL)

    async def _kill(self, cid: str, signal: str) -> None:
        result = await self._ctr("tasks", "kill", "--all", "--signal", signal, cid)
        if result.returncode != 0 and not _NOT_FOUND.search(result.stderr):
            # "process already finished" and the like: the wait that follows sees it.
            reason = last_error_line(result.stderr)
            if "finished" not in reason and "not running" not in reason:
                raise RuntimeUnavailable(f"ctr tasks kill {cid} failed: {reason}")

    async def stop(self, replica: Replica, grace: float = DEFAULT_STOP_TIMEOUT) -> ReplicaStatus:
        current = await self.status(replica)
        if current.state is not ReplicaState.RUNNING:
            return current
        cid = replica.container_id
        await self._kill(cid, "SIGTERM")
        if not await self._wait_exit(cid, grace):
            await self._kill(cid, "SIGKILL")
            if not await self._wait_exit(cid, _KILL_WAIT):
                raise RuntimeUnavailable(f"replica {replica.id} did not die after SIGKILL")
        return await self.status(replica)

    async def delete(self, replica: Replica) -> None:
        cid = replica.container_id
        row = await self._task(cid)
        if row is not None:
            if row.status != "STOPPED":
                await self._kill(cid, "SIGKILL")
                await self._wait_exit(cid, _KILL_WAIT)
            result = await self._ctr("tasks", "delete", "-f", cid)
            if result.returncode != 0 and not _NOT_FOUND.search(result.stderr):
                raise RuntimeUnavailable(
                    f"deleting the task of {replica.id} failed: {last_error_line(result.stderr)}"
                )
        result = await self._ctr("containers", "delete", cid)  # with its rootfs snapshot
        if result.returncode != 0 and not _NOT_FOUND.search(result.stderr):
            raise RuntimeUnavailable(
                f"deleting replica {replica.id} failed: {last_error_line(result.stderr)}"
            )
        self.log_path(cid).unlink(missing_ok=True)

    async def logs(self, replica: Replica) -> str:
        path = self.log_path(replica.container_id)
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            await self._labels(replica.container_id)  # ReplicaNotFound if it does not exist
            return ""

    async def list(self) -> list[Replica]:
        result = await self._checked("containers", "ls", "-q")
        prefix = f"{self.id_prefix}-"
        out = []
        for cid in sorted(line.strip() for line in result.stdout.splitlines()):
            if not cid.startswith(prefix):
                continue
            try:
                labels, image = await self._labels(cid)
            except ReplicaNotFound:
                continue  # deleted meanwhile
            if LABEL_REPLICA not in labels:
                continue
            out.append(Replica(spec_from_labels(labels, image, cid[len(prefix) :]), cid))
        return out
