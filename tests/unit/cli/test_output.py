"""Data the CLI prints (paths, references, URLs, file contents, error messages) comes out exactly
as it is: never read as rich markup (``[host."http://..."]`` is a tag to rich) or emoji codes
(``fe80::a:b:1`` holds ``:a:`` and ``:b:``), never wrapped at the terminal width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from warmstart.agent.api import PrewarmResponse
from warmstart.cli import prewarm_cmd, serve_cmd
from warmstart.cli.common import err_console, out_console
from warmstart.cli.main import app
from warmstart.cli.prewarm_cmd import Outcome
from warmstart.cli.progress import RichPullProgress
from warmstart.containerd.hosts import mirror_configs, mirror_host, render_hosts_toml
from warmstart.oci import Digest, Platform, Reference

MIRROR = "http://127.0.0.1:5050"
# Markup to rich, two emoji codes (:a: and :b:) and a bracketed IPv6 host.
TRICKY = "[bold]x[/] http://[fe80::a:b:1]:5000"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_hosts_toml_printed_through_the_cli_console_is_intact(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = mirror_configs(["docker.io"], mirror_host(MIRROR))[0]
    text = render_hosts_toml(config)
    assert f'[host."{MIRROR}"]' in text
    out_console.print(text, end="")
    printed = capsys.readouterr().out
    assert printed == text
    assert f'\n[host."{MIRROR}"]\n' in printed
    assert "# containerd tries each [host] in order" in printed


def test_containerd_config_prints_the_paths_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "[x]" / ("a-directory-name-long-enough-to-pass-eighty-columns-" * 2)
    result = invoke("containerd-config", "--mirror", MIRROR, "--out", str(out), "docker.io")
    assert result.exit_code == 0, result.output
    path = out / "docker.io" / "hosts.toml"
    assert path.is_file()
    assert result.output.splitlines()[0].startswith(f"wrote {path}  (docker.io: {MIRROR} then ")


def test_error_lines_are_printed_as_written(tmp_path: Path) -> None:
    result = invoke(
        "containerd-config", "--mirror", MIRROR, "--out", str(tmp_path), "--server", TRICKY, "x.io"
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --server takes REGISTRY=URL, not {TRICKY!r}"


def test_store_ls_prints_the_store_path(tmp_path: Path) -> None:
    store = tmp_path / "[x]:a:b"
    store.mkdir()
    result = invoke("store", "ls", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert f"store {store}: " in result.output


def test_prewarm_table_and_errors_show_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "sha256:" + "0" * 64
    containerd = {"namespace": "k8s.io", "reference": "reg.example/app:v1", "digest": digest,
                  "unpacked": True, "tag_moved": True, "pull_seconds": 1.0,
                  "unpack_seconds": 0.5, "seconds": 1.0}  # fmt: skip
    answer = PrewarmResponse.model_validate(
        {"reference": "reg.example/app:v1", "digest": digest, "manifest_digest": digest,
         "platform": None, "blobs": 1, "bytes": 1, "sources": {}, "warm_seconds": 0.5,
         "seconds": 1.0, "hot": True, "containerd": containerd}
    )  # fmt: skip

    async def fake_post(client: Any, request: Any, authorization: Any = None) -> Outcome:
        if client.url.endswith("5051"):
            return Outcome(client.url, True, 1.0, result=answer)
        return Outcome(client.url, False, 1.0, error=f"HTTP 502: {TRICKY}")

    monkeypatch.setattr(prewarm_cmd, "post_prewarm", fake_post)
    monkeypatch.setenv("COLUMNS", "200")
    bad = "http://127.0.0.1:5052"
    result = invoke(
        "prewarm", "reg.example/app:v1", "--agent", "http://127.0.0.1:5051", "--agent", bad
    )
    assert result.exit_code == 1
    assert "[tag moved during the pre-warm]" in result.output
    assert result.output.count(f"HTTP 502: {TRICKY}") == 2  # the table, the error line
    assert f"error: {bad}: HTTP 502: {TRICKY}" in result.output
    assert "\\[" not in result.output


def test_status_shows_names_and_events_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {
        "endpoint": "[bold]ep",
        "image": "reg.example/app:v1",
        "desired": 1,
        "last_decision": "scale to 1 (queue [3])",
        "replicas": [],
        "nodes": [{"name": "[bold]n1", "tier": "hot", "replicas": 0, "slots": 4}],
        "events": [{"kind": "scale", "message": TRICKY}],
    }
    monkeypatch.setattr(serve_cmd, "fetch_status", lambda url: body)
    monkeypatch.setenv("COLUMNS", "200")
    result = invoke("status")
    assert result.exit_code == 0, result.output
    assert "endpoint [bold]ep (reg.example/app:v1)" in result.output
    assert "scale to 1 (queue [3])" in result.output
    assert "[bold]n1" in result.output
    assert f"  scale: {TRICKY}" in result.output


def test_pull_progress_resolved_line(capsys: pytest.CaptureFixture[str]) -> None:
    ref = Reference.parse("127.0.0.1:5000/app:v1")
    digest = Digest.of(b"x")
    with RichPullProgress(err_console) as progress:
        progress.resolved(ref, digest, Platform.parse("linux/amd64"))
    assert f"{ref} -> {digest} for linux/amd64\n" in capsys.readouterr().err
