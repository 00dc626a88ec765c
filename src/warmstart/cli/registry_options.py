"""The registry flags every command that talks to a registry shares (``warmstart pull``,
``warmstart model push``), and the :class:`ClientOptions` they make."""

from __future__ import annotations

from pathlib import Path

import typer

from warmstart.cli.common import fail
from warmstart.registry import ClientOptions, CredentialsError, CredentialStore

INSECURE_REGISTRY_OPTION = typer.Option(
    [], "--insecure-registry", help="HOST:PORT reached over plain HTTP (repeatable)."
)
CA_FILE_OPTION = typer.Option(None, "--ca-file", help="Extra CA bundle for TLS.")
USERNAME_OPTION = typer.Option(None, "--username", "-u")
PASSWORD_STDIN_OPTION = typer.Option(False, "--password-stdin")
DOCKER_CONFIG_OPTION = typer.Option(
    None, "--docker-config", help="A docker config.json with credentials."
)


def build_credentials(
    registry: str,
    username: str | None,
    password_stdin: bool,
    docker_config: Path | None,
) -> CredentialStore:
    """The docker config's credentials (``--docker-config``, else ``$DOCKER_CONFIG`` or
    ``~/.docker``), plus ``-u USER`` with the password read from standard input."""
    try:
        creds = CredentialStore.from_docker_config(docker_config)
    except CredentialsError as e:
        fail(str(e))
    if username is not None:
        if not password_stdin:
            fail("--username needs --password-stdin (the password is read from standard input)")
        password = typer.get_text_stream("stdin").readline().rstrip("\r\n")
        creds.add(registry, username=username, password=password)
    elif password_stdin:
        fail("--password-stdin needs --username")
    return creds


def client_options(
    registry: str,
    *,
    insecure_registry: list[str],
    ca_file: Path | None,
    username: str | None,
    password_stdin: bool,
    docker_config: Path | None,
    push_chunk_size: int | None = None,
) -> ClientOptions:
    """The registry client's options from the shared flags (a bad one: one line, exit 1)."""
    if ca_file is not None and not ca_file.is_file():
        fail(f"CA file {ca_file} does not exist")
    options = ClientOptions(
        insecure=frozenset(insecure_registry),
        ca_file=str(ca_file) if ca_file else None,
        credentials=build_credentials(registry, username, password_stdin, docker_config),
    )
    if push_chunk_size is not None:
        options.push_chunk_size = push_chunk_size
    return options


__all__ = [
    "CA_FILE_OPTION",
    "DOCKER_CONFIG_OPTION",
    "INSECURE_REGISTRY_OPTION",
    "PASSWORD_STDIN_OPTION",
    "USERNAME_OPTION",
    "build_credentials",
    "client_options",
]
