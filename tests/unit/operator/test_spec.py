"""ImageCache spec validation (pure): the good specs and what is said about the bad ones."""

from __future__ import annotations

from typing import Any

import pytest

from warmstart.operator.spec import ImageCacheSpec, validate_spec

GOOD = [
    pytest.param(
        {"images": ["busybox"]},
        ImageCacheSpec(("docker.io/library/busybox:latest",)),
        id="defaults",
    ),
    pytest.param(
        {"images": ["reg.example:5000/a/b:v1", "reg.example:5000/a/b:v1"], "nodes": 3,
         "hot": False, "nodeSelector": {"pool": "gpu"}, "imagePullSecrets": [{"name": "s"}]},
        ImageCacheSpec(("reg.example:5000/a/b:v1",), {"pool": "gpu"}, 3, False, ("s",)),
        id="everything-dedup",
    ),
    pytest.param({"images": ["a.io/b:c"], "nodes": "all"}, ImageCacheSpec(("a.io/b:c",)), id="all"),
    pytest.param({"images": ["a.io/b:c"], "nodes": 0}, ImageCacheSpec(("a.io/b:c",), nodes=0),
                 id="zero"),
    pytest.param({"images": ["a.io/b:c"], "nodes": "2"}, ImageCacheSpec(("a.io/b:c",), nodes=2),
                 id="int-or-string"),
    pytest.param({"models": ["reg.example/m/llm:v1", "reg.example/m/llm:v1"]},
                 ImageCacheSpec((), models=("reg.example/m/llm:v1",)), id="models-only-dedup"),
    pytest.param({"images": ["a.io/b:c"], "models": ["a.io/m@sha256:" + "a" * 64], "hot": False},
                 ImageCacheSpec(("a.io/b:c",), hot=False, models=("a.io/m@sha256:" + "a" * 64,)),
                 id="images-and-models"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "expected"), GOOD)
def test_good_specs(spec: dict[str, Any], expected: ImageCacheSpec) -> None:
    assert validate_spec(spec) == expected


BAD = [
    pytest.param(None, "spec must be an object", id="no-spec"),
    pytest.param({}, "spec.images or spec.models must be a non-empty list", id="no-images"),
    pytest.param({"images": None, "nodes": 1}, "spec.images or spec.models", id="null-images"),
    pytest.param({"models": []}, "spec.models must be a non-empty list", id="empty-models"),
    pytest.param({"models": "a.io/m:v1"}, "spec.models must be a non-empty list",
                 id="models-not-a-list"),
    pytest.param({"models": ["Bad Model"]}, "spec.models[0] 'Bad Model'", id="bad-model"),
    pytest.param({"models": [7]}, "spec.models[0] must be a string", id="model-not-a-string"),
    pytest.param({"models": [f"a.io/m{i}:v1" for i in range(17)]}, "at most 16",
                 id="too-many-models"),
    pytest.param({"images": ["a.io/x:v1"], "models": ["a.io/x:v1"]},
                 "spec.images and spec.models both list a.io/x:v1", id="image-and-model"),
    pytest.param({"images": []}, "spec.images must be a non-empty list", id="empty-images"),
    pytest.param({"images": "busybox"}, "spec.images must be a non-empty list", id="not-a-list"),
    pytest.param({"images": ["Bad Ref"]}, "spec.images[0] 'Bad Ref'", id="bad-reference"),
    pytest.param({"images": ["a.io/B:c"]}, "spec.images[0]", id="uppercase-repository"),
    pytest.param({"images": [3]}, "spec.images[0] must be a string", id="not-a-string"),
    pytest.param({"images": ["a.io/b"], "nodeSelector": {"bad key!": "x"}},
                 "not a valid label key", id="bad-selector-key"),
    pytest.param({"images": ["a.io/b"], "nodeSelector": {"k": "bad value!"}},
                 "not a valid label value", id="bad-selector-value"),
    pytest.param({"images": ["a.io/b"], "nodeSelector": ["k"]}, "must be a map", id="selector-list"),
    pytest.param({"images": ["a.io/b"], "nodes": -1}, "between 0 and", id="negative"),
    pytest.param({"images": ["a.io/b"], "nodes": 1.5}, "whole number", id="fraction"),
    pytest.param({"images": ["a.io/b"], "nodes": "some"}, "whole number", id="odd-string"),
    pytest.param({"images": ["a.io/b"], "nodes": True}, "whole number", id="bool-count"),
    pytest.param({"images": ["a.io/b"], "hot": "yes"}, "spec.hot must be true or false", id="hot"),
    pytest.param({"images": ["a.io/b"], "imagePullSecrets": [{}]}, "imagePullSecrets[0]",
                 id="secret-without-name"),
    pytest.param({"images": ["a.io/b"], "Hot": True}, "unknown fields: Hot", id="unknown-field"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "problem"), BAD)
def test_bad_specs_say_what_is_wrong(spec: Any, problem: str) -> None:
    result = validate_spec(spec)
    assert isinstance(result, list) and result
    assert any(problem in p for p in result), result
    assert all("\n" not in p for p in result)


def test_references_are_images_then_models() -> None:
    spec = validate_spec({"images": ["a.io/i:1"], "models": ["a.io/m:1"]})
    assert isinstance(spec, ImageCacheSpec) and spec.references == ("a.io/i:1", "a.io/m:1")


def test_every_problem_is_reported_at_once() -> None:
    result = validate_spec({"images": ["Bad Ref"], "nodes": -2, "hot": 1})
    assert isinstance(result, list) and len(result) == 3
