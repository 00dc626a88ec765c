from __future__ import annotations

from warmstart.fetch.images import ImageTracker
from warmstart.oci import Descriptor, Digest, ImageIndex, ImageManifest, Platform

REG, REPO = "reg.example", "team/app"


def d(name: str) -> Digest:
    return Digest.of(name.encode())


def manifest(*layers: str) -> ImageManifest:
    return ImageManifest(
        "application/vnd.oci.image.manifest.v1+json",
        Descriptor("application/vnd.oci.image.config.v1+json", d("config"), 10),
        tuple(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d(n), 100) for n in layers),
    )


def test_image_by_tag_completes_when_all_blobs_are_there() -> None:
    tracker = ImageTracker()
    have: set[Digest] = {d("m")}
    image = tracker.saw_image(
        REG, REPO, manifest("l1", "l2", "l1"), (d("m"), 50, "mt"), "reg/app:v1"
    )
    assert image.reference == "reg/app:v1" and image.top == d("m")
    assert [e[0] for e in image.blobs] == [d("config"), d("l1"), d("l2")]  # deduplicated
    assert tracker.complete(have.__contains__) == []
    have |= {d("config"), d("l1")}
    assert tracker.complete(have.__contains__, blob=d("l1")) == []
    have.add(d("l2"))
    assert tracker.complete(have.__contains__, blob=d("other")) == []  # not one of its blobs
    assert tracker.complete(have.__contains__, blob=d("l2")) == [image]
    assert len(tracker) == 0 and tracker.complete(have.__contains__) == []


def test_index_child_is_recorded_under_the_tag() -> None:
    tracker = ImageTracker()
    index = ImageIndex(
        "application/vnd.oci.image.index.v1+json",
        (
            Descriptor(
                "application/vnd.oci.image.manifest.v1+json",
                d("amd"),
                50,
                Platform("linux", "amd64"),
            ),
            Descriptor(
                "application/vnd.oci.image.manifest.v1+json",
                d("arm"),
                50,
                Platform("linux", "arm64"),
            ),
        ),
    )
    tracker.saw_index(REG, REPO, "reg/app:v1", index, (d("idx"), 300, "index"))
    image = tracker.saw_image(REG, REPO, manifest("l1"), (d("arm"), 50, "mt"))
    assert image.reference == "reg/app:v1" and image.top == d("idx")
    assert [e[0] for e in image.manifests] == [d("idx"), d("arm")]
    assert image.platform == "linux/arm64"
    other_repo = tracker.saw_image(REG, "other/app", manifest("l1"), (d("arm"), 50, "mt"))
    assert other_repo.reference == f"{REG}/other/app@{d('arm')}"


def test_a_manifest_got_by_digest_after_its_tag_keeps_the_tag() -> None:
    # containerd: HEAD .../manifests/v1 (resolve), then GET .../manifests/<digest>
    tracker = ImageTracker()
    entry = (d("m"), 50, "mt")
    by_tag = tracker.saw_image(REG, REPO, manifest("l1"), entry, f"{REG}/{REPO}:v1")
    by_digest = tracker.saw_image(REG, REPO, manifest("l1"), entry)
    assert by_digest == by_tag and by_digest.reference == f"{REG}/{REPO}:v1"
    have = {d("m"), d("config"), d("l1")}
    assert [i.reference for i in tracker.complete(have.__contains__)] == [f"{REG}/{REPO}:v1"]
    # once recorded, a GET by digest alone is recorded by digest, as before
    again = tracker.saw_image(REG, REPO, manifest("l1"), entry)
    assert again.reference == f"{REG}/{REPO}@{d('m')}"
    # the same digest under another repository does not take this one's tag
    tracker.saw_image(REG, REPO, manifest("l1"), entry, f"{REG}/{REPO}:v2")
    other = tracker.saw_image(REG, "other/app", manifest("l1"), entry)
    assert other.reference == f"{REG}/other/app@{d('m')}"
