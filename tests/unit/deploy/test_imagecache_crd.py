"""The ImageCache CRD's OpenAPI schema (deploy/kubernetes/base/crd-imagecache.yaml) against
example objects: the good ones in deploy/kubernetes/examples/imagecache.yaml, bad ones here."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.manifests import (
    CRD_FILE,
    EXAMPLES_FILE,
    crd_validator,
    crd_version_schema,
    load_docs,
    load_one,
    schema_errors,
    to_json_schema,
)
from warmstart.oci.reference import parse_reference
from warmstart.operator.spec import ImageCacheSpec, validate_spec


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return load_one(CRD_FILE)


@pytest.fixture(scope="module")
def validator(crd: dict[str, Any]):
    return crd_validator(crd)


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    docs = load_docs(EXAMPLES_FILE)
    assert len(docs) >= 4
    return docs


def example(examples: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [e for e in examples if e["metadata"]["name"] == name]
    return found


def test_crd_names_scope_and_version(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "imagecaches.warmstart.dev"
    spec = crd["spec"]
    assert spec["group"] == "warmstart.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ImageCache"
    assert spec["names"]["plural"] == "imagecaches"
    assert spec["names"]["shortNames"] == ["ic"]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Hot": ".spec.hot",
        "Nodes": ".spec.nodes",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Cached": ".status.summary",
        "Age": ".metadata.creationTimestamp",
    }


def test_nodes_is_int_or_string_with_a_cel_rule(crd: dict[str, Any]) -> None:
    nodes = crd_version_schema(crd)["properties"]["spec"]["properties"]["nodes"]
    assert nodes["x-kubernetes-int-or-string"] is True
    assert "type" not in nodes  # a structural schema's int-or-string has none
    [rule] = nodes["x-kubernetes-validations"]
    assert rule["rule"] == "type(self) == string ? self == 'all' : self >= 0"


def test_hot_defaults_to_true_and_images_or_models_are_required(crd: dict[str, Any]) -> None:
    spec = crd_version_schema(crd)["properties"]["spec"]
    assert spec["properties"]["hot"] == {**spec["properties"]["hot"], "default": True}
    assert "required" not in spec
    assert spec["anyOf"] == [{"required": ["images"]}, {"required": ["models"]}]
    images, models = spec["properties"]["images"], spec["properties"]["models"]
    assert models["items"] == images["items"]  # the same reference rule


def test_example_objects_validate(validator, examples: list[dict[str, Any]]) -> None:
    for obj in examples:
        assert obj["apiVersion"] == "warmstart.dev/v1alpha1" and obj["kind"] == "ImageCache"
        assert schema_errors(validator, obj) == [], obj["metadata"]["name"]


def test_example_references_parse_as_the_operator_will(examples: list[dict[str, Any]]) -> None:
    for obj in examples:
        assert isinstance(validate_spec(obj["spec"]), ImageCacheSpec), obj["metadata"]["name"]
        for ref in [*obj["spec"].get("images", ()), *obj["spec"].get("models", ())]:
            parse_reference(ref)
    assert example(examples, "llm")["spec"]["models"]


def _with(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()

BAD = [
    ("images missing", "spec.images", _DELETE, "is not valid under any of the given schemas"),
    ("images empty", "spec.images", [], "should be non-empty"),
    ("images not a list", "spec.images", "registry.example.internal/app:v1", "is not of type"),
    ("reference not a string", "spec.images", [42], "is not of type 'string'"),
    ("reference with a space", "spec.images", ["registry.example.internal/app v1"], "match"),
    ("reference upper-case repository", "spec.images", ["Registry/App:v1"], "match"),
    ("reference empty", "spec.images", [""], "should be non-empty"),
    ("reference too long", "spec.images", ["r/" + "a" * 600], "too long"),
    ("negative node count", "spec.nodes", -1, "less than the minimum of 0"),
    ("node count a word", "spec.nodes", "some", "match"),
    ("node count a float", "spec.nodes", 1.5, "is not valid under any of the given schemas"),
    ("hot not a bool", "spec.hot", "yes", "is not of type 'boolean'"),
    ("nodeSelector value not a string", "spec.nodeSelector", {"gpu": True}, "is not of type"),
    ("pull secret without a name", "spec.imagePullSecrets", [{}], "'name' is a required"),
    ("unknown spec field", "spec.replicas", 3, "Additional properties"),
    ("models empty", "spec.models", [], "should be non-empty"),
    ("models not a list", "spec.models", "registry.example.internal/m:v1", "is not of type"),
    ("model upper-case repository", "spec.models", ["registry.example.internal/M:v1"], "match"),
    ("too many models", "spec.models", [f"r/m{i}:v1" for i in range(17)], "is too long"),
    ("no spec", "spec", _DELETE, "'spec' is a required property"),
]


@pytest.mark.parametrize(("case", "path", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_specs_are_rejected(
    validator, examples: list[dict[str, Any]], case: str, path: str, value: Any, message: str
) -> None:
    good = example(examples, "batch-tools")  # has nodes, hot, imagePullSecrets
    assert schema_errors(validator, good) == []
    errors = schema_errors(validator, _with(good, path, value))
    assert any(message in e for e in errors), (case, errors)


BAD_STATUS = [
    ("unknown tier", "status.nodes.0.tier", "cold", "is not one of"),
    ("node without a tier", "status.nodes.0", {"node": "node-a"}, "'tier' is a required"),
    ("negative bytes", "status.nodes.0.bytes", -5, "less than the minimum"),
    ("updated not a date-time", "status.nodes.0.updated", "yesterday", "date-time"),
    ("condition status", "status.conditions.0.status", "Maybe", "is not one of"),
    ("condition reason", "status.conditions.0.reason", "not a reason!", "match"),
    ("condition without a time", "status.conditions.0.lastTransitionTime", _DELETE, "required"),
    ("observedGeneration a string", "status.observedGeneration", "1", "is not of type"),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), BAD_STATUS, ids=[b[0] for b in BAD_STATUS]
)
def test_bad_status_is_rejected(
    validator, examples: list[dict[str, Any]], case: str, path: str, value: Any, message: str
) -> None:
    good = example(examples, "minimal")  # has a status
    assert "status" in good and schema_errors(validator, good) == []
    errors = schema_errors(validator, _with(good, path, value))
    assert any(message in e for e in errors), (case, errors)


def test_all_nodes_and_counts_are_accepted(validator, examples: list[dict[str, Any]]) -> None:
    for value in ("all", 0, 1, 500):
        assert schema_errors(validator, _with(examples[0], "spec.nodes", value)) == [], value


def test_models_alone_or_beside_images_are_accepted(
    validator, examples: list[dict[str, Any]]
) -> None:
    llm = example(examples, "llm")
    assert schema_errors(validator, llm) == []
    assert schema_errors(validator, _with(llm, "spec.images", _DELETE)) == []
    neither = _with(_with(llm, "spec.images", _DELETE), "spec.models", _DELETE)
    assert any("is not valid under any of the given schemas" in e
               for e in schema_errors(validator, neither))  # fmt: skip


def test_int_or_string_translation() -> None:
    schema = to_json_schema({"x-kubernetes-int-or-string": True, "minimum": 0, "pattern": "^all$"})
    assert schema["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "x-kubernetes-int-or-string" not in schema
