"""``warmstart operator``: keep images cached on Kubernetes nodes (ImageCache, annotated
workloads), through the nodes' agents."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from warmstart.cli.common import fail

LOG_LEVELS = ("debug", "info", "warning", "error")


def operator(
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        help="Watch ImageCaches and workloads in this namespace only (default: all namespaces).",
    ),
    kube_api: str | None = typer.Option(
        None,
        "--kube-api",
        metavar="URL",
        envvar="WARMSTART_KUBE_API",
        help="The Kubernetes API (default: in-cluster, from the service account).",
    ),
    kube_token_file: Path | None = typer.Option(
        None,
        "--kube-token-file",
        metavar="PATH",
        envvar="WARMSTART_KUBE_TOKEN_FILE",
        help="A bearer token for --kube-api (re-read on every login).",
    ),
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
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Keep images cached on Kubernetes nodes: ImageCache resources and workloads annotated
    warmstart.dev/prewarm, pre-warmed through each node's agent."""
    from warmstart.kube.config import KubeConfigError, load_kube_config
    from warmstart.operator.handlers import run_operator
    from warmstart.operator.nodes import parse_agent_urls
    from warmstart.operator.reconciler import DEFAULT_AGENT_PORT, OperatorOptions
    from warmstart.token_file import TokenFileError, read_token_file

    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}", code=2)
    try:
        kube = load_kube_config(kube_api, kube_token_file)
        token = read_token_file(peer_token_file) if peer_token_file is not None else None
        overrides = parse_agent_urls(agent_url)
    except (KubeConfigError, TokenFileError, ValueError) as e:
        fail(str(e), code=2)
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = OperatorOptions(
        kube=kube,
        agent_namespace=agent_namespace or kube.namespace,
        agent_selector=agent_selector,
        agent_port=agent_port or DEFAULT_AGENT_PORT,
        agent_urls=overrides,
        peer_token=token,
        interval=interval,
        namespace=namespace,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_operator(options, liveness=liveness, stop_flag=stop)

    asyncio.run(main())
