"""Errors raised by the pure OCI data layer. Each message is one line a user can act on."""

from __future__ import annotations

from warmstart.errors import WarmstartError


class OCIError(WarmstartError, ValueError):
    """Base of every validation error in :mod:`warmstart.oci`: the input is not valid OCI
    (answered as 400)."""

    status = 400
    code = "INVALID_REQUEST"


class InvalidDigest(OCIError):
    pass


class InvalidReference(OCIError):
    pass


class InvalidManifest(OCIError):
    pass


class UnsupportedMediaType(InvalidManifest):
    pass


class ManifestTooLarge(InvalidManifest):
    pass


class InvalidModel(InvalidManifest):
    """The manifest is not a model artifact this project can materialise, or one of its names
    or members is unsafe. The message is one line."""


class NoMatchingPlatform(OCIError):
    pass
