"""The one name of a registry: every layer (image references, the agent's upstreams and
``?ns=``, the registry client's endpoints and credentials, containerd's ``hosts.toml``) goes by
:func:`canonical_registry`, so a registry named two ways is still one registry.

Host names are case-insensitive, so the name is lower-cased. Docker Hub answers to several
names; all of them are ``docker.io``. containerd itself normalises at most ``index.docker.io``
(the CRI plugin; ``ctr`` none of them) and looks up ``hosts.toml`` and sends ``?ns=`` under the
name in the reference: :func:`registry_names` lists every name a registry may be asked for.
"""

from __future__ import annotations

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"  # where Docker Hub's registry API is served
# Other names of Docker Hub's registry API (not hub.docker.com, the web site).
DOCKER_HUB_ALIASES = frozenset(
    {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


def canonical_registry(name: str) -> str:
    """``host[:port]`` lower-cased (surrounding blanks and a trailing ``/`` dropped); Docker
    Hub's aliases become ``docker.io``. Pure: validation is
    :func:`warmstart.oci.reference.validate_registry`'s job."""
    host = name.strip().lower().rstrip("/")
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def registry_of_url(text: str) -> str:
    """The canonical name of the registry a URL or a host names, as docker config keys and
    insecure lists give them: ``https://index.docker.io/v1/`` -> ``docker.io``,
    ``http://Reg:5000/x`` -> ``reg:5000`` (the scheme and path dropped)."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return canonical_registry(text.split("/", 1)[0])


def registry_names(name: str) -> tuple[str, ...]:
    """Every name of the registry ``name`` is one of, the canonical one first."""
    canonical = canonical_registry(name)
    if canonical == DOCKER_HUB:
        return (DOCKER_HUB, *sorted(DOCKER_HUB_ALIASES))
    return (canonical,)


__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_ALIASES",
    "DOCKER_HUB_API_HOST",
    "canonical_registry",
    "registry_names",
    "registry_of_url",
]
