"""Shared CLI plumbing: one-line errors, size options, the store location."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
import typer
from rich.console import Console
from rich.text import Text

from warmstart.errors import USER_ERRORS
from warmstart.units import parse_size

T = TypeVar("T")

DEFAULT_STORE = Path(os.environ.get("WARMSTART_STORE", "/var/lib/warmstart/store"))

# What the CLI prints is data: paths, references, URLs, file contents (a hosts.toml's
# [host."http://..."] is a rich tag), error messages (an IPv6 address holds emoji codes such as
# :a:). So both consoles take strings literally (no markup, no emoji codes, no highlighting) and
# never wrap a line at the terminal width; styled output is built from Text objects. Tables still
# fit their columns to the terminal.
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)
out_console = Console(markup=False, emoji=False, highlight=False, soft_wrap=True)

STORE_OPTION = typer.Option(
    DEFAULT_STORE, "--store", envvar="WARMSTART_STORE", help="Store directory.", show_default=True
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    first = " ".join(str(message).split())
    err_console.print(Text.assemble(("error:", "bold red"), " ", first))
    raise typer.Exit(code)


def size_option(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        fail(str(e), code=2)


def run(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn every expected failure into one line and a non-zero exit."""
    try:
        return asyncio.run(fn())
    except USER_ERRORS as e:
        fail(str(e))
    except aiohttp.ClientError as e:
        fail(f"network error: {e}")
    except TimeoutError:
        fail("timed out; check that the registry is reachable, or raise the timeouts")
    except PermissionError as e:
        fail(f"permission denied: {e.filename or e}; run as a user that can write there")
    except OSError as e:
        fail(f"{e.strerror or e}: {e.filename or ''}".strip())
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
