"""The test bed's CRI client: the committed stubs match api.proto, the messages keep upstream's
field numbers, and the client against an in-process gRPC server on a unix socket."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.tools import in_ci
from warmstart_harness.testbed.cri import Auth, CriClient, CriError, CriImage
from warmstart_harness.testbed.cri_api import api_pb2, api_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "harness" / "src" / "warmstart_harness" / "testbed" / "cri_api"
GENERATED = ("api_pb2.py", "api_pb2_grpc.py", "api_pb2.pyi")


def test_committed_stubs_are_what_api_proto_generates(tmp_path: Path) -> None:
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        if in_ci():
            pytest.fail("grpcio-tools is not installed (the dev extra)", pytrace=False)
        pytest.skip("grpcio-tools is not installed")
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff is not None, "ruff is needed to format the stubs"
    copy = tmp_path / "warmstart_harness" / "testbed" / "cri_api"
    copy.mkdir(parents=True)
    shutil.copy(STUBS / "api.proto", copy / "api.proto")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-cri-stubs.sh")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "RUFF": ruff, "SRC": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        assert (copy / name).read_text() == (STUBS / name).read_text(), (
            f"{name} is stale: run scripts/gen-cri-stubs.sh"
        )


def numbers(message: Any) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_field_numbers_are_upstreams() -> None:
    """k8s.io/cri-api pkg/apis/runtime/v1/api.proto: the wire format is the numbers."""
    assert numbers(api_pb2.ImageSpec) == {
        "image": 1,
        "annotations": 2,
        "user_specified_image": 18,
        "runtime_handler": 19,
        "image_ref": 20,
    }
    assert numbers(api_pb2.AuthConfig) == {
        "username": 1,
        "password": 2,
        "auth": 3,
        "server_address": 4,
        "identity_token": 5,
        "registry_token": 6,
    }
    assert numbers(api_pb2.PullImageRequest) == {"image": 1, "auth": 2}
    assert numbers(api_pb2.Image) == {
        "id": 1,
        "repo_tags": 2,
        "repo_digests": 3,
        "size": 4,
        "uid": 5,
        "username": 6,
        "spec": 7,
        "pinned": 8,
    }
    assert numbers(api_pb2.ImageStatusResponse) == {"image": 1, "info": 2}
    assert numbers(api_pb2.VersionResponse) == {
        "version": 1,
        "runtime_name": 2,
        "runtime_version": 3,
        "runtime_api_version": 4,
    }
    services = api_pb2.DESCRIPTOR.services_by_name
    assert services["ImageService"].full_name == "runtime.v1.ImageService"
    assert set(services["ImageService"].methods_by_name) == {
        "ListImages",
        "ImageStatus",
        "PullImage",
        "RemoveImage",
    }
    assert services["RuntimeService"].full_name == "runtime.v1.RuntimeService"


class FakeImages(api_pb2_grpc.ImageServiceServicer):
    """An image service that keeps images by reference and records pulls' auth."""

    def __init__(self) -> None:
        self.images: dict[str, Any] = {}
        self.auths: list[Any] = []

    def PullImage(self, request: Any, context: Any) -> Any:
        self.auths.append(request.auth if request.HasField("auth") else None)
        if request.image.image.endswith(":private") and not request.auth.password:
            context.abort(grpc.StatusCode.UNKNOWN, "failed to pull:\n 401 Unauthorized")
        image = api_pb2.Image(id="sha256:" + "c" * 64, repo_tags=[request.image.image], size=7)
        self.images[request.image.image] = image
        return api_pb2.PullImageResponse(image_ref=image.id)

    def ImageStatus(self, request: Any, context: Any) -> Any:
        image = self.images.get(request.image.image)
        return api_pb2.ImageStatusResponse(image=image) if image else api_pb2.ImageStatusResponse()

    def ListImages(self, request: Any, context: Any) -> Any:
        wanted = request.filter.image.image
        return api_pb2.ListImagesResponse(
            images=[i for name, i in self.images.items() if not wanted or name == wanted]
        )

    def RemoveImage(self, request: Any, context: Any) -> Any:
        self.images.pop(request.image.image, None)
        return api_pb2.RemoveImageResponse()


class FakeRuntime(api_pb2_grpc.RuntimeServiceServicer):
    def Version(self, request: Any, context: Any) -> Any:
        return api_pb2.VersionResponse(
            version=request.version,
            runtime_name="fake",
            runtime_version="1.0",
            runtime_api_version="v1",
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeImages, CriClient]]:
    images = FakeImages()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_ImageServiceServicer_to_server(images, server)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(FakeRuntime(), server)
    socket = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        with CriClient(socket, timeout=10) as client:
            yield images, client
    finally:
        server.stop(grace=None)


def test_the_client_speaks_the_image_and_runtime_services(
    served: tuple[FakeImages, CriClient],
) -> None:
    images, client = served
    assert client.version().runtime_name == "fake"
    assert client.version().version == "v1"  # the kubelet's API version is sent
    ref = "reg.example/team/app:v1"
    assert client.image_status(ref) is None
    image_id = client.pull_image(ref)
    assert images.auths == [None]  # no auth: the field is absent, as the kubelet sends it
    assert client.image_status(ref) == CriImage(image_id, (ref,), (), 7)
    assert [i.repo_tags for i in client.list_images()] == [(ref,)]
    assert client.list_images("other.example/x:1") == []
    client.remove_image(ref)
    assert client.image_status(ref) is None


def test_pull_auth_is_sent_and_failures_are_one_line(
    served: tuple[FakeImages, CriClient],
) -> None:
    images, client = served
    with pytest.raises(CriError) as info:
        client.pull_image("reg.example/team/app:private")
    assert str(info.value) == "CRI PullImage: UNKNOWN: failed to pull: 401 Unauthorized"
    assert info.value.code is grpc.StatusCode.UNKNOWN
    auth = Auth(username="alice", password="secret", server_address="reg.example")
    client.pull_image("reg.example/team/app:private", auth)
    sent = images.auths[-1]
    assert (sent.username, sent.password, sent.server_address) == ("alice", "secret", "reg.example")
    assert "secret" not in repr(auth)
