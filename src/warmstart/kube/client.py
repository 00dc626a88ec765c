"""The one Kubernetes API client: get, list, watch, create, patch, delete over aiohttp.

Paths are API paths (``/api/v1/nodes``, ``/apis/discovery.k8s.io/v1/namespaces/ns/
endpointslices``); :func:`resource_path` builds them. Errors become :class:`KubeApiError` with
the status the server gave; a watch whose resource version is too old raises
:class:`WatchExpired` so the caller lists again (as client-go's reflector does).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from warmstart.kube.config import KubeConfig

JsonObj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeApiError(Exception):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"Kubernetes API: {status} {reason}: {message}".replace(" : ", ": "))
        self.status = status
        self.reason = reason
        self.message = message


class WatchExpired(KubeApiError):
    """The watch's resourceVersion is gone (410): list again, then watch from the new one."""


def resource_path(
    group_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``("v1", "nodes")`` → ``/api/v1/nodes``; ``("apps/v1", "deployments", "ns", "x")`` → …"""
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def _error_from(status: int, body: bytes) -> KubeApiError:
    message, reason = body.decode("utf-8", "replace")[:500].strip(), ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            message = str(doc.get("message") or message)
            reason = str(doc.get("reason") or "")
    except ValueError:
        pass
    cls = WatchExpired if status == 410 else KubeApiError
    return cls(status, message, reason)


class KubeClient:
    """A session against one API server. Use as ``async with KubeClient(cfg) as kube:``."""

    def __init__(self, config: KubeConfig, *, request_timeout: float = 30.0) -> None:
        self.config = config
        self._timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        ssl_ctx: ssl.SSLContext | bool = True
        if self.config.ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self.config.ca_file))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=16),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "warmstart"}
        token = self.config.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> JsonObj:
        if self._session is None:
            raise RuntimeError("KubeClient used outside 'async with'")
        data = None if body is None else json.dumps(body).encode()
        try:
            async with self._session.request(
                method,
                self.config.server + path,
                params=params,
                data=data,
                headers=self._headers(content_type or ("application/json" if data else None)),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise _error_from(resp.status, raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(0, f"{method} {path}: {exc or type(exc).__name__}") from exc
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise KubeApiError(resp.status, f"{method} {path}: the answer is not JSON") from exc
        if not isinstance(doc, dict):
            raise KubeApiError(resp.status, f"{method} {path}: the answer is not a JSON object")
        return doc

    async def get(self, path: str) -> JsonObj:
        return await self._request("GET", path)

    async def list(
        self, path: str, *, label_selector: str | None = None
    ) -> tuple[list[JsonObj], str]:
        """The items (the server selects them by ``label_selector``) and the list's
        resourceVersion."""
        params = {"labelSelector": label_selector} if label_selector else None
        doc = await self._request("GET", path, params=params)
        items = [it for it in doc.get("items") or [] if isinstance(it, dict)]
        return items, str((doc.get("metadata") or {}).get("resourceVersion") or "")

    async def create(self, path: str, body: JsonObj) -> JsonObj:
        return await self._request("POST", path, body=body)

    async def patch(self, path: str, body: Any, *, content_type: str = MERGE_PATCH) -> JsonObj:
        """A JSON merge patch (default) or a JSON patch (``content_type=JSON_PATCH``)."""
        return await self._request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str) -> JsonObj:
        return await self._request("DELETE", path)

    async def watch(
        self,
        path: str,
        *,
        resource_version: str = "",
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, JsonObj]]:
        """``(type, object)`` events until the server ends the stream (after ``timeout_seconds``).

        The server selects the objects by ``label_selector`` (one relabelled out of the
        selection arrives as DELETED). An ERROR event with 410 raises WatchExpired; BOOKMARK
        events are passed on (they carry the newest resourceVersion).
        """
        if self._session is None:
            raise RuntimeError("KubeClient used outside 'async with'")
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        try:
            async with self._session.get(
                self.config.server + path,
                params=params,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
            ) as resp:
                if resp.status >= 400:
                    raise _error_from(resp.status, await resp.read())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError as exc:
                        raise KubeApiError(
                            resp.status, f"watch {path}: a line is not JSON"
                        ) from exc
                    kind, obj = event.get("type"), event.get("object")
                    if not isinstance(obj, dict) or not isinstance(kind, str):
                        continue
                    if kind == "ERROR":
                        raise _error_from(int(obj.get("code") or 500), json.dumps(obj).encode())
                    yield kind, obj
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(0, f"watch {path}: {exc or type(exc).__name__}") from exc
