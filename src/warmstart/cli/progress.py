"""A rich progress display for pulls: one bar per blob."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from warmstart.oci import Descriptor, Digest, Platform, Reference


class RichPullProgress:
    """Implements :class:`warmstart.pull.PullProgress` with a bar per layer."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._console = console
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._tasks: dict[Digest, TaskID] = {}
        self._enabled = enabled

    def __enter__(self) -> RichPullProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def resolved(self, ref: Reference, digest: Digest, platform: Platform | None) -> None:
        if not self._enabled:
            return
        where = f" for {platform}" if platform else ""
        self._progress.console.print(Text.assemble((str(ref), "bold"), f" -> {digest}{where}"))

    def blob_started(self, desc: Descriptor, cached: bool) -> None:
        label = f"{desc.digest.short} {'cached ' if cached else 'fetch  '}"
        task = self._progress.add_task(label, total=desc.size, completed=desc.size if cached else 0)
        self._tasks[desc.digest] = task

    def blob_advanced(self, desc: Descriptor, nbytes: int) -> None:
        task = self._tasks.get(desc.digest)
        if task is not None:
            self._progress.advance(task, nbytes)

    def blob_finished(self, desc: Descriptor) -> None:
        task = self._tasks.get(desc.digest)
        if task is not None:
            self._progress.update(task, completed=desc.size)
