"""The containerd driver's pure parts (ctr output parsers, argument builders) and its command
sequences against a scripted ``ctr``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from warmstart.containerd.ctr import Ctr, CtrResult
from warmstart.containerd.pull_output import parse_go_duration, parse_pull_output
from warmstart.runtime import (
    ImageNotPresent,
    ImagePullError,
    Mount,
    Replica,
    ReplicaError,
    ReplicaExists,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaState,
)
from warmstart.runtime.containerd import (
    LABEL_EXIT_CODE,
    LABEL_REPLICA,
    LABEL_SPEC,
    ContainerdRuntime,
    container_id,
    create_args,
    exit_code_from_delete,
    is_transient_pull_error,
    parse_tasks,
    pull_retry_delay,
    spec_from_labels,
    spec_label,
)

PULL_OUTPUT = """\
127.0.0.1:5000/team/app:v1: resolved       |++++++++++++++++++++++++++++++++++++++|
manifest-sha256:2eaf: done           |++++++++++++++++++++++++++++++++++++++|
elapsed: 0.1 s                                 total:  1.9 Mi (19.0 MiB/s)
unpacking linux/amd64 sha256:2eafaae9d72bec099adbf0831d48588d7c0e8c7e9488d5005a1d9b5d460503be...
done: 15.873404ms
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("638.102235ms", 0.638102235),
        ("1m2.5s", 62.5),
        ("950µs", 0.00095),
        ("12ns", 12e-9),
        ("0s", 0.0),
        ("1h", 3600.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "12", "1x", "ms", "1s junk"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_pull_output() -> None:
    out = parse_pull_output(PULL_OUTPUT)
    assert out.digest == "sha256:2eafaae9d72bec099adbf0831d48588d7c0e8c7e9488d5005a1d9b5d460503be"
    assert out.unpack_seconds == pytest.approx(0.015873404)
    assert parse_pull_output("nothing\ndone: 3s\n").unpack_seconds == 0.0  # no unpack line


def test_tasks_and_exit_codes() -> None:
    rows = parse_tasks("TASK    PID     STATUS\na-1     123     RUNNING\nb-2     0       STOPPED\n")
    assert rows["a-1"].pid == 123 and rows["b-2"].status == "STOPPED"
    assert parse_tasks("TASK    PID     STATUS\n") == {}
    warn = 'time="..." level=warning msg="task b-2 exit with non-zero exit code 137"'
    assert exit_code_from_delete(warn) == 137
    assert exit_code_from_delete("") == 0


def test_container_ids() -> None:
    assert container_id("ws-node1", "model.a_1") == "ws-node1-model.a_1"
    for bad in ("", "-x", "a b", "a/b", "x" * 80):
        with pytest.raises(ReplicaError):
            container_id("ws", bad)


def test_create_args_and_spec_round_trip() -> None:
    spec = ReplicaSpec(
        "a",
        "r.io/m:v1",
        port=9000,
        env={"B": "2", "A": "1"},
        args=("sh", "-c", "exit 3"),
        mounts=(Mount("/data", "/opt/ml/model"),),
    )
    args = create_args(spec, "ws-a", "r.io/m:v1")
    assert args[:3] == ["containers", "create", "--net-host"]
    assert args[3:9] == ["--env", "A=1", "--env", "B=2", "--env", "PORT=9000"]
    assert f"{LABEL_REPLICA}=a" in args
    assert "type=bind,src=/data,dst=/opt/ml/model,options=rbind:ro" in args
    assert args[-6:] == ["--", "r.io/m:v1", "ws-a", "sh", "-c", "exit 3"]
    label = spec_label(spec)
    assert label is not None
    assert spec_from_labels({LABEL_SPEC: label}, "ignored", "a") == spec
    assert spec_label(ReplicaSpec("big", "r.io/m:v1", env={"X": "y" * 5000})) is None
    assert spec_from_labels({LABEL_REPLICA: "z"}, "r.io/m:v1", "q") == ReplicaSpec("z", "r.io/m:v1")
    assert "--net-host" not in create_args(ReplicaSpec("b", "i", host_network=False), "c", "i")


# -- the driver against a scripted ctr ----------------------------------------------------------


@dataclass
class ScriptedCtr:
    """Answers ``ctr`` commands with ``handler(args)``; records every command."""

    handler: Callable[[Sequence[str]], CtrResult]
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def run(self, *args: str, time_limit: float = 60.0) -> CtrResult:
        self.calls.append(args)
        return self.handler(args)


def ok(stdout: str = "", stderr: str = "") -> CtrResult:
    return CtrResult(0, stdout, stderr)


def fail(stderr: str) -> CtrResult:
    return CtrResult(1, "", f"ctr: {stderr}\n")


def _driver(tmp_path: Path, handler: Callable[[Sequence[str]], CtrResult]) -> ContainerdRuntime:
    ticks = iter(float(i) for i in range(10_000))
    return ContainerdRuntime(
        ScriptedCtr(handler),  # type: ignore[arg-type]
        tmp_path,
        id_prefix="wsn1",
        agent_url="http://127.0.0.1:9000",
        insecure_registries=frozenset({"127.0.0.1:5000"}),
        clock=lambda: next(ticks),
    )


async def test_pull_writes_hosts_through_the_agent_and_splits_timing(tmp_path: Path) -> None:
    driver = _driver(tmp_path, lambda args: ok(PULL_OUTPUT))
    timing = await driver.pull("127.0.0.1:5000/team/app:v1")
    assert timing.total_seconds == 1.0
    assert timing.unpack_seconds == pytest.approx(0.015873404)
    assert timing.fetch_seconds == pytest.approx(1.0 - 0.015873404)
    hosts = (tmp_path / "hosts/127.0.0.1:5000/hosts.toml").read_text()
    assert 'server = "http://127.0.0.1:5000"' in hosts
    assert '[host."http://127.0.0.1:9000"]' in hosts
    [call] = driver.ctr.calls  # type: ignore[attr-defined]
    assert call[:4] == ("images", "pull", "--hosts-dir", str(tmp_path / "hosts"))


async def test_pull_failures(tmp_path: Path) -> None:
    driver = _driver(tmp_path, lambda args: fail("failed to resolve reference: not found"))
    with pytest.raises(ImagePullError, match="not found"):
        await driver.pull("127.0.0.1:5000/team/app:v1")
    with pytest.raises(ImagePullError):
        await driver.pull("Not A Reference!")


async def test_create_errors_are_mapped(tmp_path: Path) -> None:
    spec = ReplicaSpec("a", "127.0.0.1:5000/team/app:v1")
    driver = _driver(tmp_path, lambda args: fail('image "x": not found'))
    with pytest.raises(ImageNotPresent):
        await driver.create(spec)
    driver = _driver(tmp_path, lambda args: fail('container "wsn1-a": already exists'))
    with pytest.raises(ReplicaExists):
        await driver.create(spec)


async def test_status_reaps_a_stopped_task_and_keeps_its_exit_code(tmp_path: Path) -> None:
    labels: dict[str, str] = {LABEL_REPLICA: "a"}
    tasks = {"wsn1-a": "STOPPED"}

    def handler(args: Sequence[str]) -> CtrResult:
        if args[:2] == ("tasks", "ls"):
            rows = "".join(f"{k} 0 {v}\n" for k, v in tasks.items())
            return ok("TASK PID STATUS\n" + rows)
        if args[:2] == ("tasks", "delete"):
            tasks.clear()
            return ok(stderr='level=warning msg="task wsn1-a exit with non-zero exit code 3"')
        if args[:2] == ("containers", "label"):
            key, value = args[3].split("=", 1)
            labels[key] = value
            return ok()
        if args[:2] == ("containers", "info"):
            return ok(json.dumps({"Labels": labels, "Image": "i"}))
        raise AssertionError(args)

    driver = _driver(tmp_path, handler)
    replica = Replica(ReplicaSpec("a", "i"), "wsn1-a")
    first = await driver.status(replica)
    assert (first.state, first.exit_code) == (ReplicaState.EXITED, 3)
    assert labels[LABEL_EXIT_CODE] == "3"
    again = await driver.status(replica)  # the task is gone: the label answers
    assert (again.state, again.exit_code) == (ReplicaState.EXITED, 3)
    assert (await driver.stop(replica)).exit_code == 3


async def test_status_of_an_unknown_replica(tmp_path: Path) -> None:
    def handler(args: Sequence[str]) -> CtrResult:
        if args[:2] == ("tasks", "ls"):
            return ok("TASK PID STATUS\n")
        return fail('container "wsn1-x" in namespace "n": not found')

    driver = _driver(tmp_path, handler)
    replica = Replica(ReplicaSpec("x", "i"), "wsn1-x")
    with pytest.raises(ReplicaNotFound):
        await driver.status(replica)
    with pytest.raises(ReplicaNotFound):
        await driver.logs(replica)
    await driver.delete(replica)  # nothing to delete is fine


# -- a pull that broke mid-body is tried again ------------------------------------------------

EOF_BODY = "ctr: failed to copy: httpReadSeeker: failed open: unexpected EOF"  # the mirror hung up
SHORT = "ctr: failed to copy: failed to read expected number of bytes: unexpected EOF"
RESET = (
    "ctr: failed to copy: read tcp 127.0.0.1:40042->127.0.0.1:5050: read: connection reset by peer"
)


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        (EOF_BODY, True),
        (SHORT, True),
        (RESET, True),
        ("CTR: Unexpected EOF", True),  # case does not matter
        ('ctr: failed to resolve reference "r.io/a:1": r.io/a:1: not found', False),
        (
            "ctr: failed to resolve reference: pulling from host 127.0.0.1:5000 failed with "
            "status code [manifests v1]: 401 Unauthorized",
            False,
        ),
        (
            "ctr: failed to copy: unexpected commit digest sha256:aa, expected sha256:bb: "
            "failed precondition",
            False,
        ),
        ('ctr: failed to dial "/run/containerd/containerd.sock": connection refused', False),
        ("ctr: failed to unpack image on snapshotter overlayfs: no space left on device", False),
        ("", False),
    ],
)
def test_which_pull_errors_are_worth_another_attempt(stderr: str, transient: bool) -> None:
    assert is_transient_pull_error(stderr) is transient


def test_the_retry_delay_doubles() -> None:
    assert [pull_retry_delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert pull_retry_delay(2, base=0.1) == pytest.approx(0.2)


def _retrying(tmp_path: Path, answers: list[CtrResult]) -> tuple[ContainerdRuntime, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    queue = list(answers)
    driver = _driver(tmp_path, lambda args: queue.pop(0))
    driver.sleep = sleep
    return driver, slept


async def test_a_pull_that_broke_mid_body_is_tried_again(tmp_path: Path) -> None:
    driver, slept = _retrying(
        tmp_path, [CtrResult(1, "", SHORT), CtrResult(1, "", RESET), ok(PULL_OUTPUT)]
    )
    timing = await driver.pull("127.0.0.1:5000/team/app:v1")
    assert timing.attempts == 3
    assert timing.unpack_seconds == pytest.approx(0.015873404)
    assert slept == [0.5, 1.0]
    calls = driver.ctr.calls  # type: ignore[attr-defined]
    assert len(calls) == 3 and calls[0] == calls[1] == calls[2]


async def test_three_broken_transfers_give_up_with_the_last_reason(tmp_path: Path) -> None:
    driver, slept = _retrying(tmp_path, [CtrResult(1, "", EOF_BODY)] * 3 + [ok(PULL_OUTPUT)])
    with pytest.raises(ImagePullError) as info:
        await driver.pull("127.0.0.1:5000/team/app:v1")
    assert "failed 3 times, last: ctr: failed to copy: httpReadSeeker" in str(info.value)
    assert len(driver.ctr.calls) == 3 and slept == [0.5, 1.0]  # type: ignore[attr-defined]


async def test_other_pull_errors_are_not_retried(tmp_path: Path) -> None:
    driver, slept = _retrying(tmp_path, [fail("failed to resolve reference: not found")])
    with pytest.raises(ImagePullError, match="not found"):
        await driver.pull("127.0.0.1:5000/team/app:v1")
    assert len(driver.ctr.calls) == 1 and slept == []  # type: ignore[attr-defined]


async def test_the_retries_stay_within_the_pull_timeout(tmp_path: Path) -> None:
    driver, slept = _retrying(tmp_path, [CtrResult(1, "", RESET), ok(PULL_OUTPUT)])
    driver.pull_timeout = 1.0  # the scripted clock ticks one second per reading
    with pytest.raises(ImagePullError, match="took over 1s"):
        await driver.pull("127.0.0.1:5000/team/app:v1")
    assert len(driver.ctr.calls) == 1 and slept == [0.5]  # type: ignore[attr-defined]


FAKE_CTR = r"""#!{python}
# A stand-in for ctr: the first {failures} pulls break mid-body, the next one succeeds.
import sys
from pathlib import Path
count = Path({count!r})
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
if "pull" not in sys.argv:
    sys.exit(2)
if n <= {failures}:
    sys.stderr.write({stderr!r} + "\n")
    sys.exit(1)
sys.stdout.write({stdout!r})
"""


async def test_the_retry_with_a_fake_ctr_executable(tmp_path: Path) -> None:
    count = tmp_path / "pulls"
    script = tmp_path / "ctr"
    script.write_text(
        FAKE_CTR.format(
            python=sys.executable, count=str(count), failures=2, stderr=SHORT, stdout=PULL_OUTPUT
        )
    )
    script.chmod(0o755)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    driver = ContainerdRuntime(
        Ctr(tmp_path / "containerd.sock", "ns", binary=str(script)),
        tmp_path,
        id_prefix="wsn1",
        agent_url="http://127.0.0.1:9000",
        sleep=sleep,
    )
    timing = await driver.pull("127.0.0.1:5000/team/app:v1")
    assert count.read_text() == "3" and timing.attempts == 3 and slept == [0.5, 1.0]
    assert timing.digest is not None and timing.digest.startswith("sha256:2eaf")
    count.unlink()
    driver.pull_attempts = 2  # two broken transfers are all it may try
    with pytest.raises(ImagePullError, match="failed 2 times, last: ctr: failed to copy"):
        await driver.pull("127.0.0.1:5000/team/app:v1")
    assert count.read_text() == "2"
