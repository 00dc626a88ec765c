"""``warmstart store ls|rm|gc|verify``: look after a node-local store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.table import Table

from warmstart.cli.common import STORE_OPTION, fail, out_console
from warmstart.errors import WarmstartError
from warmstart.store import ContentStore
from warmstart.units import format_size

app = typer.Typer(help="Inspect and maintain a node-local content store.", no_args_is_help=True)


def _open(store: Path) -> ContentStore:
    if not store.is_dir():
        fail(f"no store at {store}; pull an image first or pass --store")
    try:
        return ContentStore(store)
    except WarmstartError as e:
        fail(e.message)
    except OSError as e:
        fail(f"cannot open store {store}: {e.strerror or e}")


@app.command("ls")
def ls(store: Path = STORE_OPTION) -> None:
    """List the images in the store."""
    with _open(store) as content:
        table = Table("reference", "digest", "size", "last used", "state")
        table.columns[0].overflow = "fold"
        for img in sorted(content.images(), key=lambda i: i.reference):
            when = dt.datetime.fromtimestamp(img.last_used).strftime("%Y-%m-%d %H:%M:%S")
            state = ("complete" if img.complete else "partial") + (", pinned" if img.pinned else "")
            table.add_row(
                img.reference, str(img.manifest_digest)[:19], format_size(img.size), when, state
            )
        out_console.print(table)
        budget = f" of {format_size(content.budget)}" if content.budget else ""
        out_console.print(f"store {store}: {format_size(content.usage())}{budget} used")


@app.command("rm")
def rm(
    references: list[str] = typer.Argument(..., help="References as `store ls` shows them."),
    store: Path = STORE_OPTION,
) -> None:
    """Remove images; blobs no other image uses are deleted."""
    with _open(store) as content:
        missing = [ref for ref in references if not content.remove_image(ref)]
    if missing:
        fail(f"not in the store: {', '.join(missing)} (see `warmstart store ls`)")


@app.command("gc")
def gc(store: Path = STORE_OPTION) -> None:
    """Delete blobs no image references and leftover temporary files."""
    with _open(store) as content:
        report = content.gc()
    out_console.print(str(report))


@app.command("verify")
def verify(store: Path = STORE_OPTION) -> None:
    """Re-hash every blob; remove corrupt ones. Exit 1 if anything was wrong."""
    with _open(store) as content:
        report = content.verify()
    out_console.print(str(report))
    if not report.ok:
        raise typer.Exit(1)
