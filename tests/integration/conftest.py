"""Fixtures the integration tests share: containerd instances and agent processes, each
cleaned up after the test (their logs printed when it failed), and kmock's emulator made to
honour label selectors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.containerd import ContainerdFactory
from tests.support.kmock_selectors import SelectingKubernetesEmulator
from warmstart_harness.testbed.agent import AgentProcess


@pytest.fixture
def containerd(request: pytest.FixtureRequest) -> Iterator[ContainerdFactory]:
    factory = ContainerdFactory()
    failures = request.session.testsfailed
    try:
        yield factory
    finally:
        factory.cleanup(failed=request.session.testsfailed > failures)


@pytest.fixture
def agents(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []
    failures = request.session.testsfailed

    def make(**kwargs: Any) -> AgentProcess:
        agent = AgentProcess(tmp_path / f"agent{len(started)}", start=False, **kwargs)
        started.append(agent)
        return agent.start()

    try:
        yield make
    finally:
        for agent in reversed(started):
            if request.session.testsfailed > failures:
                sys.stderr.write(f"\n=== agent {agent.url} log ===\n{agent.log_tail()}\n")
            agent.stop()


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """The ``kmock`` fixture's emulator honours label selectors, as an API server does."""
    return {**kmock_options, "cls": SelectingKubernetesEmulator}
