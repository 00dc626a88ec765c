"""``warmstart operator``: keep images cached on Kubernetes nodes (ImageCache, annotated
workloads), through the nodes' agents."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import typer

from warmstart.cli.common import (
    KUBE_API_OPTION,
    KUBE_TOKEN_FILE_OPTION,
    LOG_LEVEL_OPTION,
    fail,
    run_until_signalled,
    setup_logging,
)


def operator(
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        help="Watch ImageCaches and workloads in this namespace only (default: all namespaces).",
    ),
    kube_api: str | None = KUBE_API_OPTION,
    kube_token_file: Path | None = KUBE_TOKEN_FILE_OPTION,
    peer_token_file: Path | None = typer.Option(
        None,
        "--peer-token-file",
        metavar="PATH",
        envvar="WARMSTART_PEER_TOKEN_FILE",
        help="A file holding the cluster's peer token; the agents refuse pre-warms without it.",
    ),
    agent_namespace: str | None = typer.Option(
        None,
        "--agent-namespace",
        help="Where the agent pods run (default: the operator's own namespace).",
    ),
    agent_selector: str = typer.Option(
        "app.kubernetes.io/name=warmstart-agent",
        "--agent-selector",
        help="Label selector of the agent pods.",
    ),
    agent_port: int | None = typer.Option(
        None,
        "--agent-port",
        min=1,
        max=65535,
        help="The agents' port on their pod IP (default: the agent's default port).",
    ),
    agent_url: list[str] = typer.Option(
        [],
        "--agent-url",
        metavar="NODE=URL",
        help="The agent of NODE is at URL, whatever its pod says; repeatable.",
    ),
    agent_store_path: str = typer.Option(
        "/var/lib/warmstart/store",
        "--agent-store-path",
        metavar="PATH",
        help="The agents' store directory on the nodes (host path): workloads annotated "
        "warmstart.dev/model mount <PATH>/models/by-ref/<reference>.",
    ),
    liveness: str | None = typer.Option(
        None,
        "--liveness",
        metavar="URL",
        help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.",
    ),
    interval: float = typer.Option(
        30.0,
        "--interval",
        min=0.2,
        help="Seconds between passes (status refresh, retries, node labels).",
    ),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Keep images and models cached on Kubernetes nodes: ImageCache resources and workloads
    annotated warmstart.dev/prewarm or warmstart.dev/model, pre-warmed through each node's
    agent."""
    if importlib.util.find_spec("kopf") is None:
        fail("warmstart operator needs kopf: pip install 'warmstart[operator]'", code=2)
    from warmstart.kube.config import KubeConfigError, load_kube_config
    from warmstart.kube.selectors import parse_label_selector
    from warmstart.operator.handlers import run_operator
    from warmstart.operator.nodes import parse_agent_urls
    from warmstart.operator.reconciler import DEFAULT_AGENT_PORT, OperatorOptions
    from warmstart.token_file import TokenFileError, read_token_file

    setup_logging(log_level)
    try:
        kube = load_kube_config(kube_api, kube_token_file)
        token = read_token_file(peer_token_file) if peer_token_file is not None else None
        overrides = parse_agent_urls(agent_url)
        parse_label_selector(agent_selector)  # the operator matches its cached pods with it
        if not agent_store_path.startswith("/"):
            raise ValueError(f"--agent-store-path {agent_store_path!r} is not an absolute path")
    except (KubeConfigError, TokenFileError, ValueError) as e:
        fail(str(e), code=2)
    options = OperatorOptions(
        kube=kube,
        agent_namespace=agent_namespace or kube.namespace,
        agent_selector=agent_selector,
        agent_port=agent_port or DEFAULT_AGENT_PORT,
        agent_urls=overrides,
        peer_token=token,
        interval=interval,
        namespace=namespace,
        agent_store_path=agent_store_path.rstrip("/") or "/",
    )

    async def main(stop: asyncio.Event) -> None:
        await run_operator(options, liveness=liveness, stop_flag=stop)

    run_until_signalled(main)
