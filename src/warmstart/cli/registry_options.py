"""The registry flags every command that talks to a registry shares (``warmstart pull``,
``warmstart model push|ls|inspect``), and the :class:`ClientOptions` they make.

A command takes them as one parameter ``registry: RegistryFlags = REGISTRY_FLAGS`` and is
decorated with :func:`registry_flags`, which puts the five options in that parameter's place.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class RegistryFlags:
    """The shared registry flags as a command receives them."""

    insecure_registry: tuple[str, ...] = ()
    ca_file: Path | None = None
    username: str | None = None
    password_stdin: bool = False
    docker_config: Path | None = None

    def client_options(self, registry: str, *, push_chunk_size: int | None = None) -> ClientOptions:
        """The registry client's options for ``registry`` (a bad flag: one line, exit 1)."""
        if self.ca_file is not None and not self.ca_file.is_file():
            fail(f"CA file {self.ca_file} does not exist")
        credentials = build_credentials(
            registry, self.username, self.password_stdin, self.docker_config
        )
        options = ClientOptions(
            insecure=frozenset(self.insecure_registry),
            ca_file=str(self.ca_file) if self.ca_file else None,
            credentials=credentials,
        )
        if push_chunk_size is not None:
            options.push_chunk_size = push_chunk_size
        return options


REGISTRY_FLAGS = RegistryFlags()  # the default of a ``registry`` parameter; replaced by the flags

_FLAG = inspect.Parameter.POSITIONAL_OR_KEYWORD
_FLAG_PARAMETERS = (
    inspect.Parameter(
        "insecure_registry", _FLAG, default=INSECURE_REGISTRY_OPTION, annotation=list[str]
    ),
    inspect.Parameter("ca_file", _FLAG, default=CA_FILE_OPTION, annotation=Path | None),
    inspect.Parameter("username", _FLAG, default=USERNAME_OPTION, annotation=str | None),
    inspect.Parameter("password_stdin", _FLAG, default=PASSWORD_STDIN_OPTION, annotation=bool),
    inspect.Parameter("docker_config", _FLAG, default=DOCKER_CONFIG_OPTION, annotation=Path | None),
)


def registry_flags(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the registry flags as options of its own, in the place of its
    parameter ``registry``, which receives them as one :class:`RegistryFlags`."""
    signature = inspect.signature(command, eval_str=True)
    if "registry" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no parameter 'registry'")
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        parameters.extend(_FLAG_PARAMETERS if parameter.name == "registry" else (parameter,))

    @functools.wraps(command)
    def with_flags(**kwargs: Any) -> None:
        flags = RegistryFlags(
            insecure_registry=tuple(kwargs.pop("insecure_registry")),
            ca_file=kwargs.pop("ca_file"),
            username=kwargs.pop("username"),
            password_stdin=kwargs.pop("password_stdin"),
            docker_config=kwargs.pop("docker_config"),
        )
        command(**kwargs, registry=flags)

    # What typer reads to make the options: the signature and the type hints.
    with_flags.__dict__["__signature__"] = signature.replace(parameters=parameters)
    with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_flags


__all__ = [
    "CA_FILE_OPTION",
    "DOCKER_CONFIG_OPTION",
    "INSECURE_REGISTRY_OPTION",
    "PASSWORD_STDIN_OPTION",
    "REGISTRY_FLAGS",
    "USERNAME_OPTION",
    "RegistryFlags",
    "build_credentials",
    "registry_flags",
]
