"""``warmstart agent``: run the node agent (pull-through mirror, peers, pre-warm, status)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from warmstart.cli.common import (
    KUBE_API_OPTION,
    KUBE_TOKEN_FILE_OPTION,
    LOG_LEVEL_OPTION,
    err_console,
    fail,
    setup_logging,
)
from warmstart.errors import WarmstartError


def agent(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="TOML file; every setting has a default, flags override it."
    ),
    listen: str | None = typer.Option(None, "--listen", help="HOST:PORT (default 127.0.0.1:5050)."),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="Store directory (default $WARMSTART_STORE or /var/lib/warmstart/store).",
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Disk budget of the store, e.g. 20GiB."
    ),
    upstream: list[str] = typer.Option(
        [],
        "--upstream",
        metavar="REGISTRY=URL",
        help="Mirror REGISTRY, reached at URL (http:// for plain HTTP); repeatable.",
    ),
    peer: list[str] = typer.Option(
        [],
        "--peer",
        metavar="URL",
        help="A peer agent's URL (repeatable; replaces the file's list).",
    ),
    node_id: str | None = typer.Option(None, "--node-id", help="Default: <hostname>:<port>."),
    default_upstream: str | None = typer.Option(
        None, "--default-upstream", help="Registry for clients that send no ?ns= (podman, skopeo)."
    ),
    peers_from_kubernetes: bool = typer.Option(
        False,
        "--peers-from-kubernetes",
        help="Peers are the ready endpoints of the agents' Service (its EndpointSlices); "
        "replaces --peer and the file's list.",
    ),
    peers_service: str | None = typer.Option(
        None, "--peers-service", help="The agents' headless Service (default warmstart-agent)."
    ),
    kube_api: str | None = KUBE_API_OPTION,
    kube_token_file: Path | None = KUBE_TOKEN_FILE_OPTION,
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Serve the OCI Distribution API (read side) as a pull-through mirror for this node."""
    # Imported here: the server stack (aiohttp.web, pydantic, prometheus) would slow every
    # other command's start.
    from warmstart.agent.app import serve
    from warmstart.agent.config import ConfigError, load_config

    setup_logging(log_level)
    try:
        cfg = load_config(
            config,
            listen=listen,
            store=store,
            budget=budget,
            upstreams=upstream,
            peers=peer,
            node_id=node_id,
            default_upstream=default_upstream,
            peers_from_kubernetes=peers_from_kubernetes or None,
            peers_service=peers_service,
            kube_api=kube_api,
            kube_token_file=kube_token_file,
        )
    except ConfigError as e:
        fail(str(e), code=2)

    def ready(addresses: str) -> None:
        upstreams = ", ".join(sorted(cfg.upstreams)) or "none"
        peers = (
            f"from Kubernetes Service {cfg.peers_service}"
            if cfg.peers_from_kubernetes
            else str(len(cfg.peers))
        )
        err_console.print(
            f"warmstart agent {cfg.node_id} serving on {addresses} "
            f"(store {cfg.store}, upstreams: {upstreams}, default: {cfg.default_upstream or '-'}, "
            f"peers: {peers})",
            markup=False,
        )

    try:
        asyncio.run(serve(cfg, ready=ready))
    except KeyboardInterrupt:
        pass
    except WarmstartError as e:  # AgentSetupError among them
        fail(e.message)
    except ImportError as e:
        fail(f"this build cannot serve yet: {e}")
    except OSError as e:
        fail(f"cannot listen on {cfg.listen}: {e.strerror or e}")
