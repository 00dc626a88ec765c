"""Shared CLI plumbing: one-line errors, size options, the store location, the options and
set-up the long-running commands (agent, serve, operator) share."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import aiohttp
import typer
from rich.console import Console
from rich.text import Text

from warmstart.errors import WarmstartError
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


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_OPTION = typer.Option("info", "--log-level", help="debug, info, warning or error.")
KUBE_API_OPTION = typer.Option(
    None,
    "--kube-api",
    metavar="URL",
    envvar="WARMSTART_KUBE_API",
    help="The Kubernetes API (default: in-cluster, from the service account).",
)
KUBE_TOKEN_FILE_OPTION = typer.Option(
    None,
    "--kube-token-file",
    metavar="PATH",
    envvar="WARMSTART_KUBE_TOKEN_FILE",
    help="A bearer token for --kube-api (re-read on every request).",
)


def setup_logging(level: str) -> None:
    """``--log-level``: checked (one line, exit 2), then the root logger's format and level."""
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}", code=2)
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` in a new event loop; SIGINT and SIGTERM set ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


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
    except WarmstartError as e:
        fail(e.message)
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
