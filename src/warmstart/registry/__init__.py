"""Async client of the OCI Distribution API: auth, manifests, resumable blob pulls and pushes.

Pure rules live in small modules without aiohttp (``auth``, ``challenge``, ``tokens``,
``retry``, ``backoff``, ``ranges``, ``credentials``, ``endpoints``, ``errors``); ``client`` sends
through a ``transport.Transport``: ``aiohttp_transport`` for real, ``MemoryTransport`` in tests.
"""

from __future__ import annotations

from warmstart.registry.client import (
    MANIFEST_ACCEPT,
    ClientOptions,
    FetchedManifest,
    RegistryClient,
)
from warmstart.registry.credentials import Credentials, CredentialsError, CredentialStore
from warmstart.registry.errors import (
    AuthError,
    DigestMismatch,
    InsecureCredentials,
    InvalidManifest,
    ManifestTooLarge,
    NotFound,
    ProtocolError,
    RegistryError,
    SizeMismatch,
    UpstreamUnavailable,
)
from warmstart.registry.upload import BlobPush, BlobReader, bytes_reader, file_reader

__all__ = [
    "MANIFEST_ACCEPT",
    "AuthError",
    "BlobPush",
    "BlobReader",
    "ClientOptions",
    "CredentialStore",
    "Credentials",
    "CredentialsError",
    "DigestMismatch",
    "FetchedManifest",
    "InsecureCredentials",
    "InvalidManifest",
    "ManifestTooLarge",
    "NotFound",
    "ProtocolError",
    "RegistryClient",
    "RegistryError",
    "SizeMismatch",
    "UpstreamUnavailable",
    "bytes_reader",
    "file_reader",
]
