"""The CRI config_path check over containerd config text (pure)."""

from __future__ import annotations

import pytest

from warmstart.containerd.cri_config import check_config_path, cri_section, fix_lines

DIR = "/etc/containerd/certs.d"
V2 = '[plugins."io.containerd.grpc.v1.cri".registry]'

CASES = [
    ("unset: no CRI section", "version = 2\n", False, "is unset"),
    ("unset: empty value", f'version = 2\n{V2}\n  config_path = ""\n', False, "is unset"),
    ("set to our dir", f'version = 2\n{V2}\n  config_path = "{DIR}"\n', True, ""),
    (
        "set to our dir with a trailing slash",
        f'version = 2\n{V2}\n  config_path = "{DIR}/"\n',
        True,
        "",
    ),
    ("our dir in a list", f'version = 2\n{V2}\n  config_path = "/other:{DIR}"\n', True, ""),
    (
        "set elsewhere",
        f'version = 2\n{V2}\n  config_path = "/etc/docker/certs.d"\n',
        False,
        "is '/etc/docker/certs.d', not",
    ),
    (
        "transfer service only (containerd 2)",
        f'version = 3\n[plugins."io.containerd.transfer.v1.local"]\n  config_path = "{DIR}"\n',
        False,
        "only for the transfer service",
    ),
    (
        "version 3 CRI images plugin",
        f'version = 3\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "{DIR}"\n',
        True,
        "",
    ),
    ("version 1 short plugin name", f'[plugins.cri.registry]\n  config_path = "{DIR}"\n', True, ""),
    (
        "version 2 key under another plugin",
        f'version = 2\n[plugins."io.containerd.other".registry]\n  config_path = "{DIR}"\n',
        False,
        "is unset",
    ),
    (
        "mirrors too",
        f'version = 2\n{V2}\n  config_path = "/x"\n'
        f'[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n  endpoint = ["a"]\n',
        False,
        "remove its registry.mirrors",
    ),
    ("malformed TOML", "version = 2\n[plugins\n", False, "is not valid TOML"),
]


@pytest.mark.parametrize(
    ("text", "ok", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_config_path(text: str, ok: bool, fragment: str) -> None:
    check = check_config_path(text, DIR, "/etc/containerd/config.toml")
    assert check.ok is ok
    assert fragment in check.message
    assert "\n" not in check.message
    if not ok and "TOML" not in fragment:
        assert "restart containerd" in check.message
        assert "config_path" in check.message


def test_missing_file_says_how_to_write_it() -> None:
    check = check_config_path(None, DIR, "/etc/containerd/config.toml")
    assert not check.ok
    assert "does not exist" in check.message and "restart containerd" in check.message


def test_fix_names_the_exact_lines() -> None:
    check = check_config_path("version = 2\n", DIR)
    assert f'{V2}  config_path = "{DIR}"' in check.message
    assert fix_lines(DIR, 3).startswith('[plugins."io.containerd.cri.v1.images".registry]')
    assert cri_section(1) == "[plugins.cri.registry]"


def test_disabled_cri_is_noted() -> None:
    text = f'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n{V2}\nconfig_path = "{DIR}"\n'
    check = check_config_path(text, DIR)
    assert check.ok and "disables the CRI plugin" in check.message
