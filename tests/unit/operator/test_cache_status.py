"""An ImageCache's status from the plan and the agents' /status (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from warmstart.agent.api import ImageStatus, ModelStatus
from warmstart.operator.cache_status import NO_AGENT, cache_status, invalid_status, node_state
from warmstart.operator.plan import Plan

X, Y = "reg.example/x:v1", "reg.example/y:v1"


def img(ref: str, tier: str, size: int = 100) -> ImageStatus:
    return ImageStatus(reference=ref, digest="sha256:" + "b" * 64, size=size, tier=tier,
                       pinned=True, platform=None, last_used=0.0)  # fmt: skip


M = "reg.example/models/llm:v1"


def mdl(tier: str, size: int = 1000) -> ModelStatus:
    return ModelStatus(reference=M, digest="sha256:" + "c" * 64, format="modelpack", size=size,
                       tier=tier, pinned=True, last_used=0.0)  # fmt: skip


def held(*images: ImageStatus | ModelStatus) -> dict[str, ImageStatus | ModelStatus]:
    return {i.reference: i for i in images}


NODE_CASES = [
    pytest.param(True, held(img(X, "hot"), img(Y, "hot")), None, ("hot", 200, None, True),
                 id="all-hot"),
    pytest.param(True, held(img(X, "hot"), img(Y, "warm")), None, ("warm", 200, None, False),
                 id="hot-wanted-one-warm"),
    pytest.param(False, held(img(X, "hot"), img(Y, "warm")), None, ("warm", 200, None, True),
                 id="warm-wanted"),
    pytest.param(False, held(img(X, "warm")), None, ("partial", 100, None, False),
                 id="one-missing"),
    pytest.param(False, held(img(X, "partial", 5), img(Y, "warm")), None,
                 ("partial", 105, None, False), id="one-partial"),
    pytest.param(False, held(), None, ("pending", 0, None, False), id="nothing-yet"),
    pytest.param(False, held(), "x: HTTP 502: boom", ("failed", 0, "x: HTTP 502: boom", False),
                 id="failed"),
    pytest.param(False, None, "agent http://a: timed out",
                 ("failed", 0, "agent http://a: timed out", False), id="agent-silent"),
    pytest.param(False, None, NO_AGENT, ("pending", 0, NO_AGENT, False), id="no-agent"),
    pytest.param(False, held(img(X, "warm"), img(Y, "warm")), "old error",
                 ("warm", 200, None, True), id="done-despite-old-error"),
]  # fmt: skip


@pytest.mark.parametrize(("hot", "images", "error", "expected"), NODE_CASES)
def test_node_tier(hot: bool, images: Any, error: str | None, expected: tuple[Any, ...]) -> None:
    state = node_state("n", (X, Y), hot, images, error)
    assert (state.tier, state.bytes, state.last_error, state.ok) == expected


MODEL_NODE_CASES = [
    pytest.param(False, (X,), held(img(X, "warm"), mdl("hot")), None, ("warm", 1100, None, True),
                 id="images-warm-model-hot"),
    pytest.param(False, (X,), held(img(X, "warm"), mdl("warm")), None,
                 ("warm", 1100, None, False), id="model-warm-is-not-enough"),
    pytest.param(True, (X,), held(img(X, "hot"), mdl("hot")), None, ("hot", 1100, None, True),
                 id="all-hot"),
    pytest.param(True, (), held(mdl("hot")), None, ("hot", 1000, None, True), id="models-only"),
    pytest.param(True, (), held(mdl("partial", 10)), None, ("partial", 10, None, False),
                 id="model-partial"),
    pytest.param(True, (X,), held(img(X, "hot")), None, ("partial", 100, None, False),
                 id="model-missing"),
    pytest.param(True, (), held(), f"{M}: HTTP 400: not a model", ("failed", 0,
                 f"{M}: HTTP 400: not a model", False), id="model-failed"),
]  # fmt: skip


@pytest.mark.parametrize(("hot", "images", "held_", "error", "expected"), MODEL_NODE_CASES)
def test_node_tier_with_models(
    hot: bool, images: Any, held_: Any, error: str | None, expected: tuple[Any, ...]
) -> None:
    state = node_state("n", images, hot, held_, error, (M,))
    assert (state.tier, state.bytes, state.last_error, state.ok) == expected


def test_summary_of_a_cache_of_models_only_says_hot() -> None:
    plan = Plan(("a",), {}, eligible=1, wanted=1)
    status = cache_status(images=(), models=(M,), hot=False, plan=plan,
                          statuses={"a": held(mdl("hot"))}, errors={}, previous=None,
                          generation=1, now="T")  # fmt: skip
    assert status["summary"] == "1/1 hot"
    assert status["conditions"][0]["reason"] == "Cached"
    assert status["nodes"] == [{"node": "a", "tier": "hot", "bytes": 1000, "updated": "T"}]


def _status(plan: Plan, statuses: Any, errors: Any = None, previous: Any = None, now: str = "T1"):
    return cache_status(images=(X,), hot=False, plan=plan, statuses=statuses,
                        errors=errors or {}, previous=previous, generation=2, now=now)  # fmt: skip


def test_ready_summary_and_stable_times() -> None:
    plan = Plan(("a", "b"), {}, eligible=3, wanted=2)
    statuses = {"a": held(img(X, "warm")), "b": held(img(X, "hot"))}
    first = _status(plan, statuses)
    assert first["summary"] == "2/2 warm" and first["observedGeneration"] == 2
    cond = first["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"], cond["lastTransitionTime"]) == (
        "Ready", "True", "Cached", "T1")  # fmt: skip
    assert [(n["node"], n["tier"], n["updated"]) for n in first["nodes"]] == [
        ("a", "warm", "T1"), ("b", "hot", "T1")]  # fmt: skip
    again = _status(plan, statuses, previous=first, now="T2")
    assert again == first  # nothing changed: the same status, no patch
    changed = _status(plan, {**statuses, "b": held()}, previous=first, now="T3")
    assert changed["conditions"][0]["lastTransitionTime"] == "T3"
    assert [n["updated"] for n in changed["nodes"]] == ["T1", "T3"]
    assert changed["summary"] == "1/2 warm"


def test_not_ready_reasons() -> None:
    plan = Plan(("a", "b"), {}, eligible=2, wanted=2)
    failing = _status(plan, {"a": held(img(X, "warm")), "b": held()}, {"b": "x: HTTP 502"})
    cond = failing["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "PrewarmFailed")
    assert "b: x: HTTP 502" in cond["message"]
    assert failing["nodes"][1]["lastError"] == "x: HTTP 502"
    short = _status(Plan(("a",), {}, eligible=1, wanted=3), {"a": held(img(X, "warm"))})
    assert short["conditions"][0]["reason"] == "NotEnoughNodes"
    assert short["summary"] == "1/3 warm"
    pending = _status(plan, {"a": held(), "b": held()})
    assert pending["conditions"][0]["reason"] == "Prewarming"


def test_invalid_spec_status() -> None:
    status = invalid_status(["spec.nodes must be ...", "spec.hot ..."], None, 4, "T")
    cond = status["conditions"][0]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == (
        "False",
        "InvalidSpec",
        4,
    )
    assert cond["message"] == "spec.nodes must be ...; spec.hot ..."
    assert invalid_status(["x"], status, 4, "T2")["conditions"][0]["lastTransitionTime"] == "T"


def test_every_status_the_operator_writes_fits_the_crd() -> None:
    """The API server prunes what the CRD's schema does not name: each field must be there."""
    from tests.support.manifests import CRD_FILE, crd_validator, load_one, schema_errors

    validator = crd_validator(load_one(CRD_FILE))
    now = "2026-12-06T16:00:00+00:00"
    plan = Plan(("a", "b"), {}, eligible=1, wanted=2)
    statuses = [
        _status(plan, {"a": held(img(X, "warm")), "b": held()}, {"b": "x: HTTP 502"}, now=now),
        _status(Plan(("a",), {}, eligible=1, wanted=1), {"a": held(img(X, "hot"))}, now=now),
        invalid_status(["spec.images[0]: bad reference"], None, 3, now),
        invalid_status(["x"], None, None, now),
        cache_status(
            images=(),
            models=(M,),
            hot=True,
            plan=plan,
            statuses={"a": held(mdl("hot")), "b": held(mdl("partial", 3))},
            errors={"b": f"{M}: HTTP 502"},
            previous=None,
            generation=1,
            now=now,
        ),
    ]
    for status in statuses:
        obj = {
            "apiVersion": "warmstart.dev/v1alpha1",
            "kind": "ImageCache",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"images": [X]},
            "status": status,
        }
        assert schema_errors(validator, obj) == []
