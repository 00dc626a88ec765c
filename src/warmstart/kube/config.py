"""Where the Kubernetes API is and how to authenticate to it.

In a pod: the service account's token and CA under ``/var/run/secrets/kubernetes.io/
serviceaccount`` and ``KUBERNETES_SERVICE_HOST``/``_PORT``. Outside one (tests, a developer's
machine): an explicit API URL (``--kube-api`` or ``WARMSTART_KUBE_API``) with an optional token
file. The token is read from its file on every request, so a rotated (bound) token is picked up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_ENV = "WARMSTART_KUBE_API"
TOKEN_FILE_ENV = "WARMSTART_KUBE_TOKEN_FILE"
NAMESPACE_ENV = "POD_NAMESPACE"


class KubeConfigError(Exception):
    """No usable Kubernetes API location; the message says what to set."""


@dataclass(frozen=True)
class KubeConfig:
    """The API server's base URL, the bearer token's file, the CA bundle and our namespace."""

    server: str
    token_file: Path | None = None
    ca_file: Path | None = None
    namespace: str = "default"

    def token(self) -> str | None:
        """The bearer token, read now (None when there is no token file)."""
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except OSError as exc:
            raise KubeConfigError(
                f"cannot read the Kubernetes token file {self.token_file}: {exc.strerror}"
            ) from exc


def _check_server(server: str) -> str:
    url = URL(server)
    if url.scheme not in ("http", "https") or not url.host:
        raise KubeConfigError(
            f"the Kubernetes API address {server!r} is not an http(s) URL; "
            "pass e.g. --kube-api https://10.0.0.1:6443"
        )
    return server.rstrip("/")


def load_kube_config(
    api: str | None = None,
    token_file: Path | None = None,
    namespace: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> KubeConfig:
    """The explicit ``api`` (or ``$WARMSTART_KUBE_API``), else the in-cluster service account."""
    env = os.environ if environ is None else environ
    api = api or env.get(API_ENV)
    if token_file is None and env.get(TOKEN_FILE_ENV):
        token_file = Path(env[TOKEN_FILE_ENV])
    ns_file = service_account_dir / "namespace"
    if namespace is None:
        namespace = env.get(NAMESPACE_ENV)
    if namespace is None and ns_file.is_file():
        namespace = ns_file.read_text().strip() or None
    if api:
        return KubeConfig(
            server=_check_server(api), token_file=token_file, namespace=namespace or "default"
        )
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError(
            "not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset) and no API address given: "
            f"pass --kube-api URL or set {API_ENV}"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    sa_token = service_account_dir / "token"
    ca = service_account_dir / "ca.crt"
    return KubeConfig(
        server=_check_server(f"https://{host}:{port}"),
        token_file=token_file or (sa_token if sa_token.is_file() else None),
        ca_file=ca if ca.is_file() else None,
        namespace=namespace or "default",
    )
