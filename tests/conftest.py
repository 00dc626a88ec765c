"""Shared fixtures: real upstream registries, a token server, image builders, a fault proxy.

Every daemon and temp dir a fixture starts is stopped/removed in its teardown, also when the
test fails; registry logs are printed to the teardown's stderr when a test fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_proxy import BlobHost, FaultProxy
from tests.support.images import ImageBuilder
from tests.support.tools import require_tool
from warmstart_harness.example_image.build import BuildOptions, BuildResult, build_example
from warmstart_harness.testbed.registry import BasicAuthRegistry, RegistryProcess, TokenAuthRegistry

# Per-test default for integration tests (the ini ``timeout`` applies to everything else).
# An explicit ``@pytest.mark.timeout`` or ``--timeout`` on the command line wins.
INTEGRATION_TIMEOUT = 120

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cli_timeout = config.getoption("timeout", default=None)
    for item in items:
        if "integration" not in item.path.parts:
            continue
        item.add_marker(pytest.mark.integration)
        if cli_timeout is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


def _stop_registry(request: pytest.FixtureRequest, reg: RegistryProcess) -> None:
    try:
        if _failed(request):
            sys.stderr.write(f"\n=== registry {reg.url} logs ===\n{reg.log_tail()}\n")
    finally:
        reg.stop()


def _scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture
def tmp_store() -> Iterator[Path]:
    """An empty directory for a content store; removed after the test."""
    path = _scratch_dir("warmstart-store-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def registry(request: pytest.FixtureRequest) -> Iterator[RegistryProcess]:
    """A plain-HTTP docker-registry (distribution 2.8) on 127.0.0.1, empty storage."""
    require_tool("docker-registry")
    reg = RegistryProcess()
    try:
        yield reg
    finally:
        _stop_registry(request, reg)


@pytest.fixture
def registry_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., RegistryProcess]]:
    """Start more registries: ``registry_factory(proxy_remoteurl=registry.url)`` etc.

    Keyword arguments go to :class:`RegistryProcess`; ``auth=True`` starts a
    :class:`TokenAuthRegistry`, ``auth="basic"`` a :class:`BasicAuthRegistry` (remaining kwargs
    go to those).
    """
    require_tool("docker-registry")
    started: list[RegistryProcess] = []

    def make(*, auth: bool | str = False, **kwargs: Any) -> RegistryProcess:
        reg: RegistryProcess
        if auth == "basic":
            reg = BasicAuthRegistry(**kwargs)
        elif auth:
            reg = TokenAuthRegistry(**kwargs)
        else:
            reg = RegistryProcess(**kwargs)
        started.append(reg)
        return reg

    try:
        yield make
    finally:
        for reg in reversed(started):
            _stop_registry(request, reg)


@pytest.fixture
def auth_registry(request: pytest.FixtureRequest) -> Iterator[TokenAuthRegistry]:
    """A TLS registry with token auth; user ``alice``/``secret``.

    Attributes: ``host``, ``url``, ``ca_file``, ``cert_dir``, ``username``, ``password``,
    ``token_server`` (``token_requests``, ``expires_in``, ``jwt_lifetime``, ``fail_status``).
    """
    require_tool("docker-registry")
    reg = TokenAuthRegistry(users={"alice": "secret"})
    try:
        yield reg
    finally:
        _stop_registry(request, reg)


@pytest.fixture
def basic_auth_registry(request: pytest.FixtureRequest) -> Iterator[BasicAuthRegistry]:
    """A TLS registry with HTTP Basic auth (htpasswd, bcrypt); user ``alice``/``secret``.

    Attributes as for ``auth_registry`` minus the token server.
    """
    require_tool("docker-registry")
    reg = BasicAuthRegistry(users={"alice": "secret"})
    try:
        yield reg
    finally:
        _stop_registry(request, reg)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory: ``fault_proxy(upstream)`` -> a started :class:`FaultProxy`.

    ``upstream`` is a registry (its CA and credentials are copied onto the proxy, so the image
    helpers and clients can use the proxy like the registry) or a base URL. ``tls=True`` serves
    the proxy over HTTPS with a certificate from the upstream's CA (auth registries only).
    """
    started: list[FaultProxy] = []

    def make(upstream: RegistryProcess | str, *, tls: bool = False) -> FaultProxy:
        if isinstance(upstream, str):
            proxy = FaultProxy(upstream)
        else:
            server_ssl = None
            if tls:
                if not isinstance(upstream, TokenAuthRegistry | BasicAuthRegistry):
                    raise ValueError("tls=True needs a registry with a CA (an auth registry)")
                server_ssl = upstream.ca.server_ssl_context(upstream.ca.issue_server("proxy"))
            proxy = FaultProxy(
                upstream.url, server_ssl=server_ssl, upstream_ssl=upstream.ssl_context()
            )
            proxy.ca_file = upstream.ca_file
            proxy.cert_dir = upstream.cert_dir
            proxy.username = upstream.username
            proxy.password = upstream.password
        proxy.start()
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in reversed(started):
            proxy.stop()


@pytest.fixture
def blob_host() -> Iterator[BlobHost]:
    """A plain-HTTP server for redirected blob GETs; records request headers."""
    host = BlobHost()
    host.start()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def image_builder() -> Iterator[ImageBuilder]:
    """``image_builder.build(registry, repo, tag, layer_sizes=[...], arch=..., seed=...)``,
    ``.build_index(registry, repo, tag, arches=[...])``, ``.push_blob``, ``.push_raw_manifest``."""
    require_tool("umoci")
    require_tool("skopeo")
    builder = ImageBuilder(_scratch_dir("warmstart-build-"))
    try:
        yield builder
    finally:
        builder.cleanup()


@pytest.fixture(scope="session")
def image_cache() -> Iterator[Path]:
    """Where the example image's debootstrap rootfs and wheels are kept: one directory per test
    session, or ``$WARMSTART_IMAGE_CACHE`` to reuse them across sessions."""
    configured = os.environ.get("WARMSTART_IMAGE_CACHE")
    if configured:
        yield Path(configured)
        return
    path = Path(tempfile.mkdtemp(prefix="warmstart-image-cache-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def example_layout(image_cache: Path) -> Iterator[BuildResult]:
    """The example model image (no padding) as an OCI layout, built once per session.

    Downloads Debian packages and wheels on a cold cache (tests using it are marked
    ``package_registries``)."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    require_tool("debootstrap")
    require_tool("umoci")
    layout = Path(tempfile.mkdtemp(prefix="warmstart-example-layout-"))
    try:
        yield build_example(
            BuildOptions(cache=image_cache, tag="test", layout=layout / "oci"), log=print
        )
    finally:
        shutil.rmtree(layout, ignore_errors=True)
