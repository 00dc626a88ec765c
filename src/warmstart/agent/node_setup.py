"""Node setup at start (``containerd_certs_dir``): a ``hosts.toml`` per configured upstream that
sends containerd's pulls through this agent, and a check that containerd's CRI plugin reads that
directory (``config_path``).

The files are rendered by ``warmstart.containerd.hosts`` (as ``warmstart containerd-config``
writes them) and written atomically; an identical file is left alone, and a file that is not
warmstart's (no marker line) is never replaced. Nothing here stops the agent: a problem is one
log line and the :class:`~warmstart.agent.api.NodeSetup` in ``/status``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from warmstart.agent.api import NodeSetup
from warmstart.agent.config import AgentConfig
from warmstart.containerd.cri_config import check_config_path
from warmstart.containerd.hosts import (
    HostsConfigError,
    HostsFile,
    WriteOutcome,
    mirror_configs,
    mirror_host,
    write_hosts_file,
)

log = logging.getLogger(__name__)

WRITER = "warmstart agent"


def agent_hosts_files(config: AgentConfig) -> list[HostsFile]:
    """One hosts.toml per configured upstream: this agent first (``local_url``: containerd is
    on the same node), then the upstream's own URL as containerd's fallback."""
    if not config.upstreams:
        return []
    servers = {registry: up.base_url(registry) for registry, up in config.upstreams.items()}
    return mirror_configs(config.upstreams, mirror_host(config.local_url), servers=servers)


def read_text(path: Path) -> str | None:
    """The file's text; None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def setup_node(config: AgentConfig) -> NodeSetup:
    """Write the hosts.toml files and check containerd's config (blocking I/O: run it in a
    thread). Logs one line per file written or skipped and one for a config_path problem."""
    certs = config.containerd_certs_dir
    assert certs is not None
    written: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    problems: list[str] = []
    try:
        files = agent_hosts_files(config)
    except HostsConfigError as e:
        files = []
        problems.append(f"cannot write hosts.toml files: {e}")
        log.warning("%s", problems[-1])
    for hosts in files:
        try:
            path, outcome = write_hosts_file(certs, hosts, WRITER)
        except OSError as e:
            problems.append(
                f"cannot write {certs / hosts.directory / 'hosts.toml'}: {e.strerror or e}"
            )
            log.warning("%s", problems[-1])
            continue
        if outcome is WriteOutcome.WRITTEN:
            written.append(str(path))
            log.info("wrote %s (%s: this agent, then %s)", path, hosts.registry, hosts.server)
        elif outcome is WriteOutcome.UNCHANGED:
            unchanged.append(str(path))
        else:
            skipped.append(str(path))
            log.warning(
                "%s was not written by warmstart (no '# %s: written by `warmstart ...`' first "
                "line): left alone, so containerd pulls %s as that file says",
                path,
                hosts.registry,
                hosts.registry,
            )
    source = config.containerd_config
    try:
        text = read_text(source)
    except OSError as e:
        check_ok, message = False, f"cannot read containerd config {source}: {e.strerror or e}"
    else:
        check = check_config_path(text, str(certs), str(source))
        check_ok, message = check.ok, check.message
    if not check_ok:
        log.warning("%s", message)
    return NodeSetup(
        certs_dir=str(certs),
        hosts_written=written,
        hosts_unchanged=unchanged,
        hosts_skipped=skipped,
        config_path_ok=check_ok,
        message="; ".join(m for m in [*problems, message] if m),
    )


__all__ = ["WRITER", "agent_hosts_files", "setup_node"]
