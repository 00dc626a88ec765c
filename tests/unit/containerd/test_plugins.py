from __future__ import annotations

from pathlib import Path

from warmstart.containerd.plugins import content_dir, parse_plugins

# Trimmed from `ctr plugins ls --detailed` of containerd 1.6.20.
SAMPLE = """\
Type:          io.containerd.content.v1
ID:            content
Exports:
               root      /srv/ctd/root/io.containerd.content.v1.content

Type:          io.containerd.snapshotter.v1
ID:            aufs
Platforms:     linux/amd64
Exports:
               root      /srv/ctd/root/io.containerd.snapshotter.v1.aufs
Error:
               Code:        Unknown
               Message:     aufs is not supported: skip plugin

Type:          io.containerd.metadata.v1
ID:            bolt
Requires:
               io.containerd.content.v1
               io.containerd.snapshotter.v1
Exports:
               path        /srv/ctd/root/io.containerd.metadata.v1.bolt/meta.db
               policy      shared

Type:          io.containerd.gc.v1
ID:            scheduler
Exports:
               ScheduleDelay          0s
"""


def test_content_root_and_policy_are_read() -> None:
    info = parse_plugins(SAMPLE)
    assert info.content_root == Path("/srv/ctd/root/io.containerd.content.v1.content")
    assert info.sharing_policy == "shared"


def test_isolated_policy() -> None:
    info = parse_plugins(SAMPLE.replace("policy      shared", "policy      isolated"))
    assert info.sharing_policy == "isolated"


def test_other_roots_are_not_taken_for_the_content_root() -> None:
    only_aufs = SAMPLE.split("Type:          io.containerd.snapshotter.v1")[1]
    info = parse_plugins("Type:          io.containerd.snapshotter.v1" + only_aufs)
    assert info.content_root is None


def test_nothing_known_in_empty_or_foreign_output() -> None:
    assert parse_plugins("").content_root is None
    assert parse_plugins("ctr: connection refused\n").sharing_policy is None


def test_content_dir_under_a_root() -> None:
    assert content_dir(Path("/var/lib/containerd")) == Path(
        "/var/lib/containerd/io.containerd.content.v1.content"
    )
