"""The Kubernetes client and informer against kmock's API emulator (no real API server here).

kmock serves list/watch/create/merge-patch/delete from memory; it ignores ``timeoutSeconds``,
which the informer bounds itself (a local resync bound). The ``kmock`` fixture honours label
selectors as the API server does (tests/support/kmock_selectors.py): the client leaves the
selecting to the server.
"""

import asyncio

import pytest

from warmstart.kube.client import KubeApiError, KubeClient, resource_path
from warmstart.kube.config import KubeConfig
from warmstart.kube.informer import Informer

SLICES = resource_path("discovery.k8s.io/v1", "endpointslices", "warmstart")


def _slice(name, service, *addresses):
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "warmstart",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "http", "port": 5050, "protocol": "TCP"}],
    }


async def _until(pred, seconds=5.0):
    async with asyncio.timeout(seconds):
        while not pred():  # noqa: ASYNC110 - polls state another task changes
            await asyncio.sleep(0.02)


async def test_crud_and_selector(kmock):
    async with KubeClient(KubeConfig(server=str(kmock.url).rstrip("/"))) as kube:
        await kube.create(SLICES, _slice("a", "warmstart-agent", "10.0.0.1"))
        await kube.create(SLICES, _slice("b", "other", "10.0.0.9"))
        items, _ = await kube.list(
            SLICES, label_selector="kubernetes.io/service-name=warmstart-agent"
        )
        assert [i["metadata"]["name"] for i in items] == ["a"]
        await kube.patch(f"{SLICES}/a", {"metadata": {"annotations": {"x": "1"}}})
        got = await kube.get(f"{SLICES}/a")
        assert got["metadata"]["annotations"] == {"x": "1"}
        await kube.delete(f"{SLICES}/a")
        with pytest.raises(KubeApiError) as err:
            await kube.get(f"{SLICES}/a")
        assert err.value.status == 404


async def test_informer_follows_adds_changes_deletes(kmock):
    seen: list[set[str]] = []

    def on_change(objs):
        seen.append({a for o in objs.values() for e in o["endpoints"] for a in e["addresses"]})

    async with KubeClient(KubeConfig(server=str(kmock.url).rstrip("/"))) as kube:
        await kube.create(SLICES, _slice("a", "warmstart-agent", "10.0.0.1"))
        inf = Informer(
            kube,
            SLICES,
            on_change,
            label_selector="kubernetes.io/service-name=warmstart-agent",
            resync=30,
        )
        task = asyncio.create_task(inf.run())
        try:
            await asyncio.wait_for(inf.synced.wait(), 5)
            assert seen[-1] == {"10.0.0.1"}
            await kube.create(SLICES, _slice("b", "warmstart-agent", "10.0.0.2"))
            await _until(lambda: seen[-1] == {"10.0.0.1", "10.0.0.2"})
            await kube.create(SLICES, _slice("c", "other", "10.0.0.3"))  # not ours
            await kube.patch(f"{SLICES}/a", {"endpoints": [{"addresses": ["10.0.0.5"]}]})
            await _until(lambda: seen[-1] == {"10.0.0.5", "10.0.0.2"})
            await kube.delete(f"{SLICES}/b")
            await _until(lambda: seen[-1] == {"10.0.0.5"})
            # relabelled out of the selection: gone, as a real server reports it
            await kube.patch(
                f"{SLICES}/a", {"metadata": {"labels": {"kubernetes.io/service-name": "x"}}}
            )
            await _until(lambda: seen[-1] == set())
            assert all("10.0.0.3" not in s for s in seen)
        finally:
            task.cancel()


async def test_informer_resyncs_and_survives_errors(kmock):
    kmock.resources["discovery.k8s.io/v1/endpointslices"] = {}  # an empty, known resource
    calls = []
    async with KubeClient(KubeConfig(server=str(kmock.url).rstrip("/"))) as kube:
        inf = Informer(
            kube, SLICES, lambda objs: calls.append(len(objs)), resync=0.3, backoff=(0.05, 0.1)
        )
        task = asyncio.create_task(inf.run())
        try:
            await _until(lambda: inf.lists >= 3)  # relisted on every resync
        finally:
            task.cancel()
    async with KubeClient(KubeConfig(server="http://127.0.0.1:9")) as kube:  # nothing listens
        inf = Informer(kube, SLICES, lambda objs: None, resync=1, backoff=(0.05, 0.1))
        task = asyncio.create_task(inf.run())
        try:
            await _until(lambda: inf.errors >= 2)
            assert not inf.synced.is_set()
        finally:
            task.cancel()


async def test_an_outage_is_logged_once(caplog):
    caplog.set_level("DEBUG", logger="warmstart.kube.informer")
    async with KubeClient(KubeConfig(server="http://127.0.0.1:9")) as kube:  # nothing listens
        inf = Informer(kube, SLICES, lambda objs: None, resync=1, backoff=(0.02, 0.05))
        task = asyncio.create_task(inf.run())
        try:
            await _until(lambda: inf.errors >= 4)
        finally:
            task.cancel()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "retrying with backoff" in warnings[0].getMessage()
