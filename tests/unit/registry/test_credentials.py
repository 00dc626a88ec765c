from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from warmstart.oci.registry_name import registry_of_url
from warmstart.registry.credentials import (
    Credentials,
    CredentialsError,
    CredentialStore,
    decode_auth,
    default_config_path,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://registry-1.docker.io/v2/", "docker.io"),
        ("Registry.Example.com", "registry.example.com"),
        ("http://localhost:5000", "localhost:5000"),
        ("https://ghcr.io/v2/some/path", "ghcr.io"),
        ("127.0.0.1:5000/", "127.0.0.1:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_credential_keys_name_registries(key: str, host: str) -> None:
    assert registry_of_url(key) == host


@pytest.mark.parametrize(
    ("auth", "user", "password"),
    [
        (b64("alice:secret"), "alice", "secret"),
        (b64("alice:pa:ss:word"), "alice", "pa:ss:word"),
        (b64("alice:"), "alice", ""),
        (b64("alice:secret").rstrip("="), "alice", "secret"),  # unpadded
        (b64("alice:secret\x00\x00"), "alice", "secret"),
    ],
)
def test_decode_auth(auth: str, user: str, password: str) -> None:
    assert decode_auth(auth) == (user, password)


@pytest.mark.parametrize("auth", ["!!!", b64("no-colon"), b64(":nouser"), b64("\xff")])
def test_decode_auth_rejects(auth: str) -> None:
    with pytest.raises(CredentialsError):
        decode_auth(auth)


CONFIG = {
    "auths": {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
        "127.0.0.1:5000": {"auth": b64("alice:wonderland")},
        "ghcr.io": {"username": "bob", "password": "pw"},
        "auth.example.com": {"auth": b64("<token>:"), "identitytoken": "refresh-me"},
        "only-token.example.com": {"identitytoken": "tok"},
        "empty.example.com": {},
        "http://dup.example.com/v1/": {"auth": b64("url:form")},
        "dup.example.com": {"auth": b64("bare:form")},
    },
    "credsStore": "desktop",
}


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("docker.io", Credentials("hubuser", "hubpass")),
        ("index.docker.io", Credentials("hubuser", "hubpass")),
        ("127.0.0.1:5000", Credentials("alice", "wonderland")),
        ("127.0.0.1:5001", None),
        ("ghcr.io", Credentials("bob", "pw")),
        ("auth.example.com", Credentials("<token>", "", "refresh-me")),
        ("only-token.example.com", Credentials(None, None, "tok")),
        ("empty.example.com", None),
        ("dup.example.com", Credentials("bare", "form")),
        ("unknown.example.com", None),
    ],
)
def test_store_from_config(registry: str, expected: Credentials | None) -> None:
    store = CredentialStore.from_docker_config_data(CONFIG)
    assert store.get(registry) == expected


def test_read_file_env_and_home(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(CONFIG))
    env = {"DOCKER_CONFIG": str(tmp_path / "cfg")}
    assert default_config_path(env) == tmp_path / "cfg" / "config.json"
    assert CredentialStore.from_environment(env).get("ghcr.io") == Credentials("bob", "pw")

    home = tmp_path / "home"
    assert default_config_path({}, home) == home / ".docker" / "config.json"
    assert len(CredentialStore.from_environment({}, home)) == 0  # no file: empty store


def test_from_docker_config_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert CredentialStore.from_docker_config(None).get("ghcr.io") == Credentials("bob", "pw")


@pytest.mark.parametrize(
    "content", ["not json", "[]", '{"auths": []}', json.dumps({"auths": {"x": {"auth": "!!"}}})]
)
def test_bad_config_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(CredentialsError) as err:
        CredentialStore.from_docker_config(path)
    assert "\n" not in str(err.value)


def test_explicit_entries_and_merge() -> None:
    store = CredentialStore({"https://index.docker.io/v1/": Credentials("a", "b")})
    store.add_basic("REG:5000", "u", "p")
    store.add_identity_token("tok.example", "refresh")
    store.add("kw.example", username="k", password="w")
    assert store.get("kw.example") == Credentials("k", "w")
    with pytest.raises(TypeError):
        store.add("kw.example", Credentials("a", "b"), username="c")
    assert store.get("docker.io") == Credentials("a", "b")
    assert store.get("reg:5000") == Credentials("u", "p")
    assert store.get("tok.example") == Credentials(None, None, "refresh")
    assert "reg:5000" in store and "nope" not in store

    file_store = CredentialStore.from_docker_config_data(CONFIG)
    merged = store.merged(file_store)
    assert merged.get("docker.io") == Credentials("a", "b")  # explicit wins
    assert merged.get("ghcr.io") == Credentials("bob", "pw")


def test_credentials_helpers_do_not_leak_secrets() -> None:
    creds = Credentials("alice", "s3cret", "tok")
    assert creds.has_basic
    assert creds.basic_header() == "Basic " + b64("alice:s3cret")
    assert "s3cret" not in repr(creds) and "tok'" not in repr(creds)
    assert Credentials(identity_token="t").is_empty is False
    assert Credentials().is_empty
    with pytest.raises(ValueError):
        Credentials(identity_token="t").basic_header()
