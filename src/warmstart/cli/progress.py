"""Rich progress displays: pulls (one bar per blob), model pushes (one bar per file and one
for all of them)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

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

from warmstart.model_dir import LocalFile
from warmstart.oci import Descriptor, Digest, Platform, Reference


def _bars(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


class _Bars:
    """Progress bars shown while the ``with`` block runs."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()


class RichPullProgress(_Bars):
    """Implements :class:`warmstart.pull.PullProgress` with a bar per layer."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._console = console
        self._progress = _bars(console, enabled)
        self._tasks: dict[Digest, TaskID] = {}
        self._enabled = enabled

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


LABEL_WIDTH = 40


def _label(path: str, state: str) -> str:
    """``path`` (its end, if long) padded to :data:`LABEL_WIDTH`, then the state."""
    shown = path if len(path) <= LABEL_WIDTH else "..." + path[-(LABEL_WIDTH - 3) :]
    return f"{shown:<{LABEL_WIDTH}} {state:<6}"


class RichPushProgress(_Bars):
    """Implements :class:`warmstart.model_push.PushProgress`: a bar per file (hashed, then
    pushed, or found in the registry) and one for the bytes of all files in the registry."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self._progress = _bars(console, enabled)
        self._tasks: dict[str, TaskID] = {}
        self._total: TaskID | None = None
        self._done = 0  # bytes of finished files
        self._in_flight: dict[str, int] = {}  # path -> bytes sent or held

    def started(self, ref: Reference, files: Sequence[LocalFile]) -> None:
        self._total = self._progress.add_task(
            _label(f"{ref} ({len(files)} files)", "total"), total=sum(f.size for f in files)
        )
        for f in files:
            self._tasks[f.path] = self._progress.add_task(_label(f.path, "hash"), total=f.size)

    def hashed(self, file: LocalFile, nbytes: int) -> None:
        self._progress.advance(self._tasks[file.path], nbytes)

    def pushing(self, file: LocalFile, position: int) -> None:
        task = self._tasks[file.path]
        if file.path not in self._in_flight:
            self._progress.update(task, description=_label(file.path, "push"))
        self._in_flight[file.path] = position
        self._progress.update(task, completed=position)
        self._update_total()

    def finished(self, file: LocalFile, existed: bool) -> None:
        task = self._tasks[file.path]
        state = "exists" if existed else "pushed"
        self._progress.update(task, description=_label(file.path, state), completed=file.size)
        self._in_flight.pop(file.path, None)
        self._done += file.size
        self._update_total()

    def _update_total(self) -> None:
        if self._total is not None:
            self._progress.update(self._total, completed=self._done + sum(self._in_flight.values()))
