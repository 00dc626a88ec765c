"""A list-then-watch cache of one resource, relisted on every resync (client-go's reflector).

:class:`Informer` keeps ``{(namespace, name): object}`` current and calls ``on_change`` with the
whole set after the first list and after every change. A watch lasts ``resync`` seconds (the
server's ``timeoutSeconds``, and a local bound for servers that ignore it), then the resource is
listed again, so a missed event is repaired within one resync. An expired resourceVersion (410)
lists again at once; an unreachable server is retried with backoff, the last set kept meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from warmstart.backoff import Backoff
from warmstart.kube.client import JsonObj, KubeApiError, KubeClient, WatchExpired

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]
OnChange = Callable[[dict[ObjectKey, JsonObj]], Awaitable[None] | None]


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def object_key(obj: JsonObj) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """Keeps the objects at ``path`` (matching ``label_selector``) in ``self.objects``."""

    def __init__(
        self,
        kube: KubeClient,
        path: str,
        on_change: OnChange,
        *,
        label_selector: str | None = None,
        resync: float = 300.0,
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.kube = kube
        self.path = path
        self.label_selector = label_selector
        self.resync = resync
        self.objects: dict[ObjectKey, JsonObj] = {}
        self.synced = asyncio.Event()
        self.lists = 0
        self.errors = 0
        self._on_change = on_change
        self._backoff = backoff

    async def _changed(self) -> None:
        result: Any = self._on_change(dict(self.objects))
        if asyncio.iscoroutine(result):
            await result

    async def _list(self) -> str:
        items, version = await self.kube.list(self.path, label_selector=self.label_selector)
        self.objects = {object_key(o): o for o in items}
        self.lists += 1
        self.synced.set()
        await self._changed()
        return version

    async def _watch(self, version: str) -> None:
        async with asyncio.timeout(self.resync + min(5.0, self.resync)):
            async for kind, obj in self.kube.watch(
                self.path,
                resource_version=version,
                label_selector=self.label_selector,
                timeout_seconds=max(1, int(self.resync)),
            ):
                if kind == "BOOKMARK":
                    continue
                key = object_key(obj)
                if kind == "DELETED":
                    if self.objects.pop(key, None) is None:
                        continue
                else:
                    if self.objects.get(key) == obj:
                        continue
                    self.objects[key] = obj
                await self._changed()

    async def run(self) -> None:
        """List and watch until cancelled."""
        delays = Backoff(*self._backoff).delays()
        failing = False  # one warning per outage, not one per retry
        while True:
            try:
                version = await self._list()
                if failing:
                    log.warning("watching %s: the API answers again", self.path)
                failing = False
                delays = Backoff(*self._backoff).delays()
                await self._watch(version)
            except TimeoutError:
                continue  # the resync: list again
            except WatchExpired:
                continue
            except KubeApiError as exc:
                self.errors += 1
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "watching %s: %s; keeping the last %d object(s), retrying with backoff "
                    "up to %.0f s",
                    self.path,
                    _short(str(exc)),
                    len(self.objects),
                    self._backoff[1],
                )
                failing = True
                await asyncio.sleep(next(delays))
