"""Credentials per registry: given explicitly, or read from a docker ``config.json``.

The docker file looks like ``{"auths": {"<key>": {"auth": base64("user:pass")}}}``, or with
``"identitytoken"`` (an OAuth2 refresh token, after ``docker login`` to a registry whose token
server hands them out). Keys are host names, ``host:port``, or URLs such as
``https://index.docker.io/v1/``; they are normalised the way docker does (scheme and path
dropped, Docker Hub's aliases folded into ``docker.io``). Credential helpers (``credsStore``,
``credHelpers``) are not run: pass such credentials explicitly.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from warmstart.oci.registry_name import registry_of_url

DOCKER_CONFIG_ENV = "DOCKER_CONFIG"
MAX_CONFIG_BYTES = 4 << 20


class CredentialsError(ValueError):
    """A docker config file that cannot be read or has a malformed entry."""


@dataclass(frozen=True)
class Credentials:
    """What we know for one registry: username/password, an identity token, or both."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @property
    def has_basic(self) -> bool:
        return bool(self.username) and self.password is not None

    @property
    def is_empty(self) -> bool:
        return not self.has_basic and not self.identity_token

    def basic_header(self) -> str:
        """``Basic <base64(user:pass)>``."""
        if not self.has_basic:
            raise ValueError("no username/password")
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def decode_auth(value: str) -> tuple[str, str]:
    """The ``auth`` field: base64 of ``user:password`` (the password may contain ``:``)."""
    try:
        raw = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CredentialsError("'auth' is not base64 of 'user:password'") from None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise CredentialsError("'auth' does not decode to 'user:password'")
    return user, password.strip("\x00")


def credentials_from_entry(entry: Mapping[str, object]) -> Credentials | None:
    """One ``auths`` entry of a docker config; None if it holds nothing usable."""
    username: str | None = None
    password: str | None = None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        username, password = decode_auth(auth)
    else:
        user, pw = entry.get("username"), entry.get("password")
        if isinstance(user, str) and user and isinstance(pw, str):
            username, password = user, pw
    token = entry.get("identitytoken")
    identity_token = token if isinstance(token, str) and token else None
    creds = Credentials(username, password, identity_token)
    return None if creds.is_empty else creds


def default_config_path(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json`` if set, else ``~/.docker/config.json``."""
    env = os.environ if env is None else env
    directory = env.get(DOCKER_CONFIG_ENV)
    if directory:
        return Path(directory) / "config.json"
    return (home if home is not None else Path.home()) / ".docker" / "config.json"


class CredentialStore:
    """Credentials keyed by normalised registry host. Explicit entries win over the file's."""

    def __init__(self, entries: Mapping[str, Credentials] | None = None) -> None:
        self._entries: dict[str, Credentials] = {}
        for host, creds in (entries or {}).items():
            self.add(host, creds)

    def add(
        self,
        registry: str,
        credentials: Credentials | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        identity_token: str | None = None,
    ) -> None:
        """Set the credentials of ``registry``: a :class:`Credentials`, or its fields by name."""
        if credentials is None:
            credentials = Credentials(username, password, identity_token)
        elif username is not None or password is not None or identity_token is not None:
            raise TypeError("pass either a Credentials or username/password/identity_token")
        self._entries[registry_of_url(registry)] = credentials

    def add_basic(self, registry: str, username: str, password: str) -> None:
        self.add(registry, Credentials(username=username, password=password))

    def add_identity_token(self, registry: str, token: str, username: str | None = None) -> None:
        self.add(registry, Credentials(username=username, identity_token=token))

    def get(self, registry: str) -> Credentials | None:
        return self._entries.get(registry_of_url(registry))

    def __contains__(self, registry: object) -> bool:
        return isinstance(registry, str) and self.get(registry) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def hosts(self) -> Iterable[str]:
        return tuple(self._entries)

    def merged(self, other: CredentialStore) -> CredentialStore:
        """A new store with ``other``'s entries, overridden by this store's."""
        out = CredentialStore()
        out._entries.update(other._entries)
        out._entries.update(self._entries)
        return out

    @classmethod
    def from_docker_config_data(cls, doc: object) -> CredentialStore:
        if not isinstance(doc, dict):
            raise CredentialsError("docker config is not a JSON object")
        auths = doc.get("auths", {})
        if not isinstance(auths, dict):
            raise CredentialsError("docker config 'auths' is not an object")
        store = cls()
        # URL-form keys first, so that a bare host key of the same registry wins.
        ordered = sorted(auths.items(), key=lambda kv: "://" not in str(kv[0]))
        for key, entry in ordered:
            if not isinstance(key, str) or not isinstance(entry, dict):
                continue
            try:
                creds = credentials_from_entry(entry)
            except CredentialsError as e:
                raise CredentialsError(f"docker config entry {key!r}: {e}") from None
            if creds is not None:
                store.add(key, creds)
        return store

    @classmethod
    def from_docker_config(cls, path: str | os.PathLike[str] | None = None) -> CredentialStore:
        """Read one config file (None: ``$DOCKER_CONFIG`` or ``~/.docker``); missing: empty."""
        p = Path(path) if path is not None else default_config_path()
        try:
            with p.open("rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            return cls()
        except OSError as e:
            raise CredentialsError(f"cannot read docker config {p}: {e.strerror}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise CredentialsError(f"docker config {p} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise CredentialsError(f"docker config {p} is not valid JSON: {e}") from None
        try:
            return cls.from_docker_config_data(doc)
        except CredentialsError as e:
            raise CredentialsError(f"{p}: {e}") from None

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, home: Path | None = None
    ) -> CredentialStore:
        """The store of ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
        return cls.from_docker_config(default_config_path(env, home))

    def __repr__(self) -> str:
        return f"CredentialStore(hosts={sorted(self._entries)!r})"


__all__ = [
    "DOCKER_CONFIG_ENV",
    "CredentialStore",
    "Credentials",
    "CredentialsError",
    "credentials_from_entry",
    "decode_auth",
    "default_config_path",
]
