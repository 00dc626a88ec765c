import pytest

from warmstart.kube.selectors import (
    SelectorError,
    check_labels,
    node_selector_matches,
    parse_label_selector,
    selector_matches,
    tolerates_taints,
)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=agent", {"app": "agent"}, True),
        ("app==agent", {"app": "agent"}, True),
        ("app=agent", {"app": "other"}, False),
        ("app=agent", {}, False),
        ("app!=agent", {}, True),
        ("app!=agent", {"app": "agent"}, False),
        ("env in (a, b)", {"env": "b"}, True),
        ("env in (a,b)", {"env": "c"}, False),
        ("env notin (a,b)", {}, True),
        ("env notin (a,b)", {"env": "a"}, False),
        ("gpu", {"gpu": ""}, True),
        ("!gpu", {"gpu": "x"}, False),
        ("!gpu", {}, True),
        ("app=agent,env in (a,b),!legacy", {"app": "agent", "env": "a"}, True),
        ("app=agent,env in (a,b),!legacy", {"app": "agent", "env": "a", "legacy": "1"}, False),
        (
            "kubernetes.io/service-name=warmstart-agent",
            {"kubernetes.io/service-name": "warmstart-agent"},
            True,
        ),
    ],
)
def test_label_selector(selector, labels, expected):
    assert selector_matches(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize("bad", ["app=", "=x", "a b", "env in a,b", "app=x y", "env in (a b)"])
def test_bad_label_selector(bad):
    if bad == "app=":  # an empty value is allowed by Kubernetes
        assert parse_label_selector(bad)
        return
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_check_labels():
    assert check_labels({"kubernetes.io/os": "linux"}) == {"kubernetes.io/os": "linux"}
    assert check_labels(None) == {}
    for bad in ({"": "x"}, {"a": "x y"}, {"a": 1}, ["a"], {"a": "x" * 64}):
        with pytest.raises(SelectorError):
            check_labels(bad)


def test_node_selector():
    assert node_selector_matches({"pool": "gpu"}, {"pool": "gpu", "zone": "a"})
    assert not node_selector_matches({"pool": "gpu"}, {"pool": "cpu"})
    assert node_selector_matches(None, {})


NO_SCHEDULE = {"key": "gpu", "value": "true", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("tolerations", "taints", "expected"),
    [
        ([], [], True),
        ([], [NO_SCHEDULE], False),
        ([], [{"key": "x", "effect": "PreferNoSchedule"}], True),
        ([{"operator": "Exists"}], [NO_SCHEDULE], True),
        ([{"key": "gpu", "operator": "Exists"}], [NO_SCHEDULE], True),
        ([{"key": "gpu", "value": "true"}], [NO_SCHEDULE], True),
        ([{"key": "gpu", "value": "false"}], [NO_SCHEDULE], False),
        ([{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}], [NO_SCHEDULE], False),
        ([{"key": "other", "operator": "Exists"}], [NO_SCHEDULE], False),
    ],
)
def test_tolerations(tolerations, taints, expected):
    assert tolerates_taints(tolerations, taints) is expected
