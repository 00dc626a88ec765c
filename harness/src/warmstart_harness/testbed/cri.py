"""A CRI client for tests and benchmarks: containerd's CRI plugin driven as a kubelet drives it.

The kubelet's image path is ``runtime.v1.ImageService`` over containerd's socket: PullImage
(with the pod's registry credentials in ``auth``), ImageStatus (is it present? then no pull),
ListImages and RemoveImage (image GC); ``RuntimeService.Version`` says who answers. The
messages are the subset in ``cri_api/api.proto`` (field numbers as upstream's), compiled with
grpcio-tools; the stubs are committed (``scripts/gen-cri-stubs.sh``).

This is harness, not product: warmstart itself never calls CRI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc

from warmstart_harness.testbed.cri_api import api_pb2, api_pb2_grpc

KUBELET_API_VERSION = "v1"
DEFAULT_TIMEOUT = 300.0

Reply = TypeVar("Reply")


class CriError(Exception):
    """A CRI call failed: ``code`` is the gRPC status (``NOT_FOUND``, ``UNKNOWN``, ...)."""

    def __init__(self, method: str, code: grpc.StatusCode | None, details: str) -> None:
        name = code.name if code is not None else "UNKNOWN"
        super().__init__(f"CRI {method}: {name}: {' '.join(details.split())}")
        self.method = method
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Version:
    version: str
    runtime_name: str
    runtime_version: str
    runtime_api_version: str


@dataclass(frozen=True)
class CriImage:
    """One image as the CRI reports it (``id`` is the config digest)."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    pinned: bool = False

    @classmethod
    def from_message(cls, image: Any) -> CriImage:
        return cls(
            id=image.id,
            repo_tags=tuple(image.repo_tags),
            repo_digests=tuple(image.repo_digests),
            size=int(image.size),
            pinned=bool(image.pinned),
        )


@dataclass(frozen=True, repr=False)
class Auth:
    """``PullImageRequest.auth``: what the kubelet sends from a pod's imagePullSecrets."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 of user:password
    server_address: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"Auth(username={self.username!r}, server_address={self.server_address!r})"

    def to_message(self) -> Any:
        return api_pb2.AuthConfig(
            username=self.username,
            password=self.password,
            auth=self.auth,
            server_address=self.server_address,
            identity_token=self.identity_token,
            registry_token=self.registry_token,
        )


class CriClient:
    """``CriClient(socket)``: the image and runtime services on a containerd socket."""

    def __init__(self, socket: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = f"unix://{socket}"
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target)
        self._images = api_pb2_grpc.ImageServiceStub(self._channel)
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)

    def _call(self, method: str, rpc: Callable[..., Reply], request: Any) -> Reply:
        try:
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise CriError(method, code, details or "") from None

    def version(self) -> Version:
        reply = self._call(
            "Version",
            self._runtime.Version,
            api_pb2.VersionRequest(version=KUBELET_API_VERSION),
        )
        return Version(
            reply.version, reply.runtime_name, reply.runtime_version, reply.runtime_api_version
        )

    def pull_image(self, image: str, auth: Auth | None = None) -> str:
        """Pull ``image`` as the kubelet does; the image's ID (its config digest)."""
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image))
        if auth is not None:
            request.auth.CopyFrom(auth.to_message())
        return str(self._call("PullImage", self._images.PullImage, request).image_ref)

    def image_status(self, image: str) -> CriImage | None:
        """The image if present (by reference, ID or digest), else None: a kubelet with
        ``imagePullPolicy: IfNotPresent`` pulls only when this is None."""
        reply = self._call(
            "ImageStatus",
            self._images.ImageStatus,
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)),
        )
        return CriImage.from_message(reply.image) if reply.HasField("image") else None

    def list_images(self, image: str | None = None) -> list[CriImage]:
        request = api_pb2.ListImagesRequest()
        if image is not None:
            request.filter.image.image = image
        reply = self._call("ListImages", self._images.ListImages, request)
        return [CriImage.from_message(i) for i in reply.images]

    def remove_image(self, image: str) -> None:
        """Remove the image (all its names, as the kubelet's image GC does); idempotent."""
        self._call(
            "RemoveImage",
            self._images.RemoveImage,
            api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)),
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Auth", "CriClient", "CriError", "CriImage", "Version"]
