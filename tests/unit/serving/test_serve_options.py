"""``--node`` parsing and the status rendering of ``warmstart serve`` / ``status`` (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from warmstart.cli import serve_cmd
from warmstart.cli.serve_cmd import render_status
from warmstart.serving.replicas import PHASES
from warmstart.serving.serve import (
    NodeOption,
    NodeOptionError,
    parse_node_option,
    parse_node_options,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "node-a=/run/containerd/containerd.sock,http://127.0.0.1:5050",
            NodeOption("node-a", Path("/run/containerd/containerd.sock"), "http://127.0.0.1:5050"),
        ),
        (
            "b=/s.sock,-",
            NodeOption("b", Path("/s.sock"), None),
        ),
        (
            "n1=/x/c.sock,http://10.0.0.2:5050/,host=10.0.0.2,slots=2,netns=ws-n1",
            NodeOption("n1", Path("/x/c.sock"), "http://10.0.0.2:5050", "10.0.0.2", 2, "ws-n1"),
        ),
    ],
)
def test_node_options(text: str, expected: NodeOption) -> None:
    assert parse_node_option(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node-a", "NAME=SOCKET,AGENT_URL"),
        ("Node_A=/s.sock,-", "node name"),
        ("a=/s.sock", "use - for no agent"),
        ("a=s.sock,-", "absolute"),
        ("a=/s.sock,ftp://x", "http(s)://"),
        ("a=/s.sock,-,color=red", "unknown extra"),
        ("a=/s.sock,-,slots=0", "1..256"),
        ("a=/s.sock,-,slots=two", "whole number"),
        ("a=/s.sock,-,slots=1,slots=2", "twice"),
        ("a=/s.sock,-,netns=../etc", "namespace"),
        ("a=/s.sock,-,host=a b", "address"),
    ],
)
def test_bad_node_options_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(NodeOptionError) as e:
        parse_node_option(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_node_names_are_unique_and_at_least_one_is_given() -> None:
    with pytest.raises(NodeOptionError, match="at least one"):
        parse_node_options([])
    with pytest.raises(NodeOptionError, match="twice"):
        parse_node_options(["a=/1.sock,-", "a=/2.sock,-"])


def test_status_rendering_shows_replicas_nodes_and_tiers() -> None:
    body = {
        "endpoint": "embed",
        "image": "r/e:1",
        "desired": 2,
        "in_flight": 3,
        "queue_length": 1,
        "last_decision": "panic",
        "replicas": [
            {
                "id": "embed-1",
                "node": "node-a",
                "tier": "cold",
                "state": "ready",
                "url": "http://127.0.0.1:18080",
                "ready_seconds": 8.5,
                "phases": {"pull": 5.0, "unpack": 1.25, "start": 0.1, "load": 2.0},
            },
            {"id": "embed-2", "node": "node-b", "tier": "peer", "state": "starting", "phases": {}},
        ],
        "nodes": [{"name": "node-a", "tier": "hot", "replicas": 1, "slots": 1}],
    }
    console = Console(width=200, record=True)
    for part in render_status(body):
        console.print(part)
    text = console.export_text()
    assert "desired 2, in flight 3, queued 1" in text
    assert "5.00/1.25/0.10/2.00" in text and "-/-/-/-" in text
    assert "embed-2" in text and "peer" in text and "hot" in text


def test_status_rendering_shows_the_wait_phase() -> None:
    body = {
        "replicas": [
            {
                "id": "embed-2",
                "node": "node-b",
                "tier": "warm",
                "state": "ready",
                "ready_seconds": 4.73,
                "phases": {"wait": 4.15, "pull": 0.12, "unpack": 0.0, "start": 0.0, "load": 0.46},
            }
        ]
    }
    console = Console(width=200, record=True)
    for part in render_status(body):
        console.print(part)
    text = console.export_text()
    assert "wait/pull/unpack/start/load" in text
    assert "4.15/0.12/0.00/0.00/0.46" in text and "4.73" in text
    assert serve_cmd.PHASES == PHASES  # the CLI's copy of the controller's phase names


def test_status_rendering_shows_the_model_phase_and_tiers() -> None:
    body = {
        "endpoint": "embed",
        "image": "r/e:1",
        "model": "r/minilm:v1",
        "replicas": [
            {
                "id": "embed-1",
                "node": "node-a",
                "tier": "cold",
                "model_tier": "peer",
                "state": "ready",
                "ready_seconds": 9.1,
                "phases": {"wait": 0.0, "pull": 5.0, "unpack": 1.25, "model": 0.75,
                           "start": 0.1, "load": 2.0},
                "model_seconds": 7.0,
            },
            {"id": "embed-2", "node": "node-b", "tier": "hot", "model_tier": "hot",
             "state": "starting", "phases": {}, "model_seconds": None},
        ],
        "nodes": [{"name": "node-a", "tier": "hot", "model_tier": "warm", "replicas": 1,
                   "slots": 1}],
    }  # fmt: skip
    console = Console(width=250, record=True)
    for part in render_status(body):
        console.print(part)
    text = console.export_text()
    assert "(r/e:1, model r/minilm:v1)" in text
    assert "wait/pull/unpack/model/start/load" in text and "model s" in text
    assert "0.00/5.00/1.25/0.75/0.10/2.00" in text and "7.00" in text
    assert "cold/peer" in text and "hot/hot" in text and "hot/warm" in text
    assert "-/-/-/-/-/-" in text


def test_status_rendering_survives_a_sparse_body() -> None:
    assert isinstance(render_status({})[0], str)
