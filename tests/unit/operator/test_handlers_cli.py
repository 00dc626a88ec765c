"""kopf wiring (login with the operator's KubeConfig, settings) and the CLI's argument errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import kopf
from typer.testing import CliRunner

from warmstart.cli.main import app
from warmstart.cli.operator_cmd import operator
from warmstart.kube.config import KubeConfig
from warmstart.operator.handlers import _status_changes, build_settings, login_handler
from warmstart.operator.model_mount import DEFAULT_STORE_PATH


def test_kopf_logs_in_with_the_same_config(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    ca = tmp_path / "ca.crt"
    config = KubeConfig("https://10.0.0.1:6443", token_file=token, ca_file=ca, namespace="ws")
    info = login_handler(config)()
    assert isinstance(info, kopf.ConnectionInfo)
    assert (info.server, info.token, info.scheme, info.ca_path) == (
        "https://10.0.0.1:6443", "abc", "Bearer", str(ca))  # fmt: skip
    token.write_text("rotated")
    assert login_handler(config)().token == "rotated"  # read again on every login
    anonymous = login_handler(KubeConfig("http://127.0.0.1:1"))()
    assert anonymous.token is None and anonymous.scheme is None


def test_settings_keep_kopfs_state_in_annotations() -> None:
    settings = build_settings(scanning=False)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.finalizer == "warmstart.dev/operator"
    assert settings.scanning.disabled


def test_only_changed_status_fields_are_patched() -> None:
    assert _status_changes({"a": 1, "b": [1]}, {"a": 1, "b": [2]}) == {"b": [2]}
    assert _status_changes(None, {"a": 1}) == {"a": 1}
    assert _status_changes({"a": 1}, {"a": 1}) == {}


def test_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    api = ["--kube-api", "http://127.0.0.1:1"]
    result = runner.invoke(app, ["operator", *api, "--agent-url", "node-a"])
    assert result.exit_code == 2 and "--agent-url" in result.output
    result = runner.invoke(app, ["operator", "--kube-api", "ftp://x"])
    assert result.exit_code == 2 and "not an http(s) URL" in result.output
    missing = tmp_path / "missing"
    result = runner.invoke(app, ["operator", *api, "--peer-token-file", str(missing)])
    assert result.exit_code == 2
    result = runner.invoke(app, ["operator", *api, "--agent-selector", "app in (a"])
    assert result.exit_code == 2 and "label selector" in result.output
    result = runner.invoke(app, ["operator", *api, "--agent-store-path", "var/lib/ws"])
    assert result.exit_code == 2 and "not an absolute path" in result.output


def test_agent_store_path_defaults_to_the_daemonsets_store() -> None:
    option = inspect.signature(operator).parameters["agent_store_path"].default
    assert option.default == DEFAULT_STORE_PATH
