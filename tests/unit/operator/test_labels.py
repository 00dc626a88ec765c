"""Node labels and the Deployments' scheduling hint (pure)."""

from __future__ import annotations

import copy
import hashlib
import re

import pytest

from warmstart.agent.api import ImageStatus, ModelStatus
from warmstart.kube.selectors import check_labels
from warmstart.operator.labels import (
    PREFERRED,
    affinity_patch,
    hint_terms,
    image_label,
    is_ours,
    label_patch,
    merged_preferred,
    model_label,
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


# -- models -----------------------------------------------------------------------------------

M1, M2 = "reg.example/models/llm:v1", "reg.example/models/llm@sha256:" + "4" * 64
ML1, ML2 = model_label(M1), model_label(M2)


def mdl(ref: str, tier: str, digest: str = D1) -> ModelStatus:
    return ModelStatus(reference=ref, digest=digest, format="modelpack", size=1, tier=tier,
                       pinned=True, last_used=0.0)  # fmt: skip


def test_model_label_is_keyed_by_the_reference_and_a_valid_label_key() -> None:
    assert ML1 == "warmstart.dev/model." + hashlib.sha256(M1.encode()).hexdigest()[:12]
    assert ML1 != ML2  # same repository, another reference: another path, another label
    for key in (ML1, ML2, L1):
        name = key.partition("/")[2]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?", name)
        assert check_labels({key: "hot"}, "labels") == {key: "hot"}
        assert check_labels({key: "warm"}, "labels") == {key: "warm"}


@pytest.mark.parametrize(
    ("held", "managed", "expected"),
    [
        pytest.param({M1: mdl(M1, "hot")}, [M1], {ML1: "hot"}, id="hot-model"),
        pytest.param({M1: mdl(M1, "warm")}, [M1], {ML1: "warm"}, id="warm-model"),
        pytest.param({M1: mdl(M1, "partial")}, [M1], {}, id="partial-model"),
        pytest.param({M1: mdl(M1, "hot")}, [], {}, id="not-managed"),
        pytest.param({M1: mdl(M1, "hot"), M2: mdl(M2, "warm")}, [M1, M2],
                     {ML1: "hot", ML2: "warm"}, id="same-digest-two-references"),
        pytest.param({M1: mdl(M1, "hot"), "r/a:1": img("r/a:1", D1, "warm")}, [M1, "r/a:1"],
                     {ML1: "hot", L1: "warm"}, id="an-image-with-the-same-digest"),
    ],
)  # fmt: skip
def test_wanted_labels_for_models(held: dict, managed: list[str], expected: dict) -> None:
    assert wanted_labels(held, managed) == expected


def test_label_patch_removes_stale_model_labels_too() -> None:
    current = {ML1: "hot", ML2: "warm", L1: "hot", "team": "x"}
    assert label_patch(current, {ML1: "hot"}) == {
        "metadata": {"labels": {ML2: None, L1: None}}}  # fmt: skip


def test_hint_terms_for_images_then_models() -> None:
    terms = hint_terms([D1], [M1])
    assert [(t["weight"], t["preference"]["matchExpressions"][0]["key"]) for t in terms] == [
        (100, L1), (50, L1), (100, ML1), (50, ML1)]  # fmt: skip
    assert all(is_ours(t) for t in terms) and not is_ours(USER)
    assert hint_terms([], [M1, M1]) == hint_terms([], [M1])


def test_affinity_with_a_model_is_idempotent_and_drops_it_when_gone() -> None:
    dep = _deployment([USER])
    patch = affinity_patch(dep, [D1], models=[M1])
    assert patch is not None
    terms = patch["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][PREFERRED]
    assert terms[0] == USER and len(terms) == 5
    applied = copy.deepcopy(dep)
    applied["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][PREFERRED] = terms
    assert affinity_patch(applied, [D1], models=[M1]) is None
    without = merged_preferred(applied["spec"]["template"]["spec"]["affinity"], [D1])
    assert without is not None and [t["preference"]["matchExpressions"][0]["key"]
                                    for t in without[1:]] == [L1, L1]  # fmt: skip
