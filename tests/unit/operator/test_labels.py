"""Node labels and the Deployments' scheduling hint (pure)."""

from __future__ import annotations

import copy

from warmstart.agent.api import ImageStatus
from warmstart.operator.labels import (
    PREFERRED,
    affinity_patch,
    image_label,
    label_patch,
    merged_preferred,
    short_digest,
    wanted_labels,
)

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
L1, L2 = image_label(D1), image_label(D2)


def img(ref: str, digest: str, tier: str) -> ImageStatus:
    return ImageStatus(reference=ref, digest=digest, size=1, tier=tier, pinned=False,
                       platform=None, last_used=0.0)  # fmt: skip


def test_short_digest_and_label() -> None:
    assert short_digest(D1) == "1" * 12
    assert L1 == "warmstart.dev/image.111111111111"


def test_wanted_labels_only_for_managed_hot_or_warm() -> None:
    held = {
        "r/a:1": img("r/a:1", D1, "warm"),
        "r/a:latest": img("r/a:latest", D1, "hot"),  # same digest: hot wins
        "r/b:1": img("r/b:1", D2, "partial"),
        "r/c:1": img("r/c:1", "sha256:" + "3" * 64, "hot"),  # not managed
    }
    assert wanted_labels(held, ["r/a:1", "r/a:latest", "r/b:1"]) == {L1: "hot"}


def test_label_patch_adds_changes_removes_only_ours() -> None:
    current = {"kubernetes.io/hostname": "n", L1: "warm", L2: "hot", "team": "x"}
    assert label_patch(current, {L1: "hot"}) == {"metadata": {"labels": {L1: "hot", L2: None}}}
    assert label_patch(current, {L1: "warm", L2: "hot"}) is None
    assert label_patch({}, {}) is None
    assert label_patch(None, {L2: "warm"}) == {"metadata": {"labels": {L2: "warm"}}}


USER = {"weight": 7, "preference": {"matchExpressions": [
    {"key": "zone", "operator": "In", "values": ["a"]}]}}  # fmt: skip


def _deployment(terms: list | None, **extra_affinity: object) -> dict:
    affinity: dict = dict(extra_affinity)
    if terms is not None:
        affinity["nodeAffinity"] = {
            PREFERRED: terms,
            "requiredDuringSchedulingIgnoredDuringExecution": {"x": 1},
        }
    return {"spec": {"template": {"spec": {"affinity": affinity}}}}


def test_affinity_merge_keeps_user_terms_and_is_idempotent() -> None:
    dep = _deployment([USER], podAntiAffinity={"y": 2})
    patch = affinity_patch(dep, [D1])
    assert patch is not None
    terms = patch["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][PREFERRED]
    assert terms[0] == USER
    assert [(t["weight"], t["preference"]["matchExpressions"][0]["values"]) for t in terms[1:]] == [
        (100, ["hot"]), (50, ["warm"])]  # fmt: skip
    # Only the preferred list is in the patch: required terms and pod (anti-)affinity stay.
    assert set(patch["spec"]["template"]["spec"]["affinity"]) == {"nodeAffinity"}
    assert set(patch["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]) == {PREFERRED}
    applied = copy.deepcopy(dep)
    applied["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][PREFERRED] = terms
    assert affinity_patch(applied, [D1]) is None  # no change: no patch, no rollout
    # A new digest replaces our old terms, the user's stay first.
    moved = merged_preferred(applied["spec"]["template"]["spec"]["affinity"], [D2])
    assert moved is not None and moved[0] == USER
    assert {t["preference"]["matchExpressions"][0]["key"] for t in moved[1:]} == {L2}


def test_affinity_from_nothing_and_to_nothing() -> None:
    assert affinity_patch({"spec": {}}, []) is None
    patch = affinity_patch({"spec": {}}, [D1])
    assert patch is not None
    ours = patch["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][PREFERRED]
    assert merged_preferred({"nodeAffinity": {PREFERRED: [USER, *ours]}}, []) == [USER]


def test_affinity_on_an_inference_service_predictor() -> None:
    isvc = {"spec": {"predictor": {"containers": [{"image": "x"}],
                                   "affinity": {"nodeAffinity": {PREFERRED: [USER]}}}}}  # fmt: skip
    patch = affinity_patch(isvc, [D1], "InferenceService")
    assert patch is not None and set(patch) == {"spec"} and set(patch["spec"]) == {"predictor"}
    terms = patch["spec"]["predictor"]["affinity"]["nodeAffinity"][PREFERRED]
    assert terms[0] == USER and len(terms) == 3
    applied = copy.deepcopy(isvc)
    applied["spec"]["predictor"]["affinity"]["nodeAffinity"][PREFERRED] = terms
    assert affinity_patch(applied, [D1], "InferenceService") is None
