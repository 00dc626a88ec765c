"""Who may read what from the cache: a cached blob or manifest of a repository that needs
credentials goes only to clients whose credentials the upstream accepts for that repository.

* A repository is *private* when an anonymous request for it is refused (asked once, then
  remembered for ``privacy_ttl``; a stale answer is used while the upstream is unreachable).
* For a private repository the client must send ``Authorization: Basic``; the credentials are
  checked by asking the upstream with them, and the answer is remembered for a short TTL under
  a hash of (Authorization, registry, repository) — the credentials themselves are not kept.
* Content addressed by digest must also belong to the repository it is asked through (else
  knowing a digest of a private layer would let anyone read it through a public repository):
  membership is known from the manifests served, or confirmed by one upstream HEAD.
* Registries marked ``shared`` skip all of this; so do peers that present the cluster token.

No aiohttp: the upstream is reached through an :class:`AccessChecker`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable

from warmstart.fetch.cache import LRUMap, TTLCache
from warmstart.fetch.interfaces import NotFoundError, UnauthorizedError, UnavailableError
from warmstart.fetch.source import Access, AccessChecker, AccessQuery, Probe, SourceError
from warmstart.registry.credentials import Credentials
from warmstart.store.singleflight import Flight, SingleFlight

MAX_AUTHORIZATION = 8192


def parse_basic(authorization: str) -> Credentials | None:
    """``Basic base64(user:password)`` -> Credentials; None if it is not that."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip() or len(authorization) > MAX_AUTHORIZATION:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user:
        return None
    return Credentials(username=user, password=password)


def grant_key(authorization: str, registry: str, repository: str) -> str:
    """What a credential check is remembered under: a hash, never the secret itself."""
    data = "\n".join((authorization, registry, repository)).encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).hexdigest()


def peer_token_ok(configured: str | None, presented: str | None) -> bool:
    """True when no token is configured, or the presented one matches (constant time)."""
    if configured is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(configured.encode(), presented.encode())


class AccessControl:
    def __init__(
        self,
        checker: AccessChecker,
        *,
        shared: Iterable[str] = (),
        privacy_ttl: float = 300.0,
        privacy_keep_stale: float = 86400.0,
        grant_ttl: float = 60.0,
        denial_ttl: float = 10.0,
        max_entries: int = 10_000,
        max_members: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checker = checker
        self._shared = frozenset(shared)
        self._private: TTLCache[tuple[str, str], bool] = TTLCache(
            privacy_ttl, keep_stale=privacy_keep_stale, max_entries=max_entries, clock=clock
        )
        self._grants: TTLCache[str, bool] = TTLCache(
            grant_ttl, max_entries=max_entries, clock=clock
        )
        self._denial_ttl = denial_ttl
        self._members: LRUMap[tuple[str, str, str], bool] = LRUMap(max_members)
        self._flights: SingleFlight[tuple[str, ...], Access] = SingleFlight()

    def is_shared(self, registry: str) -> bool:
        return registry in self._shared

    # -- membership ----------------------------------------------------------------------

    def note_members(self, registry: str, repository: str, digests: Iterable[object]) -> None:
        """Record that these digests are in the repository (from a manifest we verified)."""
        for digest in digests:
            self._members.put((registry, repository, str(digest)), True)

    def is_member(self, registry: str, repository: str, digest: object) -> bool:
        return (registry, repository, str(digest)) in self._members

    # -- the check -----------------------------------------------------------------------

    async def admit(
        self, registry: str, repository: str, authorization: str | None, probe: Probe
    ) -> None:
        """Return if a client with ``authorization`` may read ``probe`` through this
        repository; raise :class:`UnauthorizedError`, :class:`NotFoundError` (a digest that
        is not in the repository) or :class:`UnavailableError` (the upstream cannot tell)."""
        if registry in self._shared:
            return
        if await self._is_private(registry, repository, probe):
            await self._check_credentials(registry, repository, authorization, probe)
        if probe.is_digest and not self.is_member(registry, repository, probe.reference):
            access = await self._ask(
                ("agent", registry, repository, probe.kind, probe.reference),
                lambda: self._checker.check_access(
                    AccessQuery(registry, repository, probe, as_agent=True)
                ),
                f"checking that {probe.reference} is in {registry}/{repository}",
            )
            if access is Access.ABSENT:
                raise NotFoundError(f"{probe.kind} {probe.reference} is not in {repository}")
            if access is Access.DENIED:
                raise UnavailableError(
                    f"the upstream {registry} refuses this agent's credentials for {repository}"
                )
            self.note_members(registry, repository, [probe.reference])

    async def _is_private(self, registry: str, repository: str, probe: Probe) -> bool:
        key = (registry, repository)
        cached = self._private.get(key)
        if cached is not None and cached.fresh:
            return cached.value
        try:
            access = await self._ask(
                ("anonymous", registry, repository),
                lambda: self._checker.check_access(AccessQuery(registry, repository, probe)),
                f"checking whether {registry}/{repository} needs credentials",
            )
        except UnavailableError:
            if cached is not None:
                return cached.value  # the upstream is down: what we knew last
            raise
        private = access is Access.DENIED
        self._private.put(key, private)
        if access is Access.PRESENT and probe.is_digest:
            self.note_members(registry, repository, [probe.reference])
        return private

    async def _check_credentials(
        self, registry: str, repository: str, authorization: str | None, probe: Probe
    ) -> None:
        where = f"{registry}/{repository}"
        if not authorization:
            raise UnauthorizedError(f"{where} needs credentials: log in to this mirror")
        credentials = parse_basic(authorization)
        if credentials is None:
            raise UnauthorizedError(f"{where}: only Basic credentials (user:password) work here")
        key = grant_key(authorization, registry, repository)
        allowed = self._grants.get_fresh(key)
        if allowed is None:
            access = await self._ask(
                ("grant", key),
                lambda: self._checker.check_access(
                    AccessQuery(registry, repository, probe, credentials)
                ),
                f"checking credentials for {where}",
            )
            allowed = access is not Access.DENIED
            self._grants.put(key, allowed, None if allowed else self._denial_ttl)
            if access is Access.PRESENT and probe.is_digest:
                self.note_members(registry, repository, [probe.reference])
        if not allowed:
            raise UnauthorizedError(f"the upstream refused these credentials for {where}")

    async def _ask(
        self, key: tuple[str, ...], call: Callable[[], Awaitable[Access]], what: str
    ) -> Access:
        """One upstream question at a time per key; concurrent askers share the answer."""

        async def run(_flight: Flight[tuple[str, ...], Access]) -> Access:
            try:
                return await call()
            except SourceError as e:
                raise UnavailableError(f"{what}: {e}", retry_after=e.retry_after) from e

        return await self._flights.do(key, run)


__all__ = ["AccessControl", "grant_key", "parse_basic", "peer_token_ok"]
