"""``warmstart containerd-config``: write containerd hosts.toml files pointing at the agent."""

from __future__ import annotations

from pathlib import Path

import typer

from warmstart.cli.common import fail, out_console
from warmstart.containerd.hosts import (
    DEFAULT_DIAL_TIMEOUT,
    HostsConfigError,
    mirror_configs,
    mirror_host,
    write_hosts_dir,
)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, url = value.partition("=")
        if not sep or not key or not url:
            fail(f"{option} takes REGISTRY=URL, not {value!r}", code=2)
        out[key] = url
    return out


def containerd_config(
    registries: list[str] = typer.Argument(
        ..., metavar="REGISTRY...", help="Registries to mirror, e.g. docker.io 127.0.0.1:5000."
    ),
    mirror: str = typer.Option(
        ...,
        "--mirror",
        help="The agent's URL as containerd reaches it, e.g. http://127.0.0.1:5050.",
    ),
    out: Path = typer.Option(
        ..., "--out", help="The hosts directory (containerd's config_path, ctr --hosts-dir)."
    ),
    insecure: list[str] = typer.Option(
        [], "--insecure", help="A registry served over plain HTTP (its server gets http://)."
    ),
    server: list[str] = typer.Option(
        [], "--server", help="REGISTRY=URL: the upstream URL to fall back to for REGISTRY."
    ),
    skip_verify: bool = typer.Option(
        False, "--skip-verify", help="Do not verify the mirror's TLS certificate."
    ),
    ca: list[Path] = typer.Option([], "--ca", help="CA file for the mirror's certificate."),
    dial_timeout: str = typer.Option(
        DEFAULT_DIAL_TIMEOUT,
        "--dial-timeout",
        help="Mirror dial timeout (containerd >= 2.1 only; 1.6/1.7 ignore it). 'none' omits it.",
    ),
    capabilities: str = typer.Option(
        "pull,resolve", "--capabilities", help="Comma-separated: pull, resolve, push."
    ),
) -> None:
    """Write DIR/<registry>/hosts.toml so containerd pulls through the agent, falling back to
    the registry itself when the agent is down."""
    try:
        host = mirror_host(
            mirror,
            capabilities=[c for c in capabilities.split(",") if c.strip()],
            skip_verify=True if skip_verify else None,
            ca=[str(p.absolute()) for p in ca],
            dial_timeout=None if dial_timeout.lower() in ("", "none", "0") else dial_timeout,
        )
        configs = mirror_configs(
            registries, host, insecure=insecure, servers=_pairs(server, "--server")
        )
    except HostsConfigError as e:
        fail(str(e), code=2)
    try:
        paths = write_hosts_dir(out, configs)
    except OSError as e:
        fail(f"cannot write {e.filename or out}: {e.strerror or e}")
    for path, config in zip(paths, configs, strict=True):
        fallback = config.server or "containerd's default"
        out_console.print(f"wrote {path}  ({config.registry}: {mirror} then {fallback})")
