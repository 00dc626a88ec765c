"""One-time grants that let a hot pre-warm's ``ctr images pull`` act for the client who asked.

``ctr`` sends no credentials to the agent, so a private image could not be imported into
containerd. The pre-warmer issues a random token bound to the requesting client's identity, puts
it in the temporary hosts.toml as a request header for the agent, and revokes it when the import
ends. A request that carries a live token is served with that client's identity: the grant never
gives more access than the client who asked for the pre-warm already has.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from warmstart.fetch.interfaces import ClientIdentity

IMPORT_HEADER = "X-Warmstart-Import"


class ImportGrants:
    def __init__(self) -> None:
        self._grants: dict[str, ClientIdentity] = {}

    @contextmanager
    def grant(self, identity: ClientIdentity) -> Iterator[str]:
        token = secrets.token_urlsafe(32)
        self._grants[token] = identity
        try:
            yield token
        finally:
            self._grants.pop(token, None)

    def identity(self, token: str | None) -> ClientIdentity | None:
        if not token or len(token) > 128:
            return None
        return self._grants.get(token)

    def __len__(self) -> int:
        return len(self._grants)
