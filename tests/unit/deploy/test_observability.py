"""The alert rules and the Grafana dashboard in deploy/kubernetes/monitoring use only metric
names the code exports (parsed from src/warmstart/*/metrics.py now, not a list kept here)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.manifests import (
    PROMETHEUS_SERIES,
    RULES_FILE,
    dashboard_expressions,
    exported_metric_names,
    load_dashboard,
    load_one,
    promql_metric_names,
    rule_expressions,
)


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    return exported_metric_names()


def test_metric_names_are_read_from_the_code(exported: dict[str, str]) -> None:
    # counters as Prometheus sees them, gauges as they are
    assert exported["warmstart_agent_served_bytes_total"] == "warmstart/agent/metrics.py"
    assert "warmstart_agent_served_bytes" not in exported
    assert exported["warmstart_agent_store_budget_bytes"] == "warmstart/agent/metrics.py"
    assert exported["warmstart_endpoint_replicas"] == "warmstart/serving/metrics.py"
    assert exported["warmstart_endpoint_router_total"] == "warmstart/serving/metrics.py"  # a gauge


def test_promql_name_extraction() -> None:
    expr = (
        'sum by (node, kind) (rate(warmstart_agent_peer_errors_total{kind="unreachable",'
        ' node=~"$node"}[$__rate_interval])) / clamp_min(sum(up{job="a"}) offset 5m, 1e-9)'
        " > 0.95 * warmstart_agent_store_budget_bytes and on (node) bogus_metric"
    )
    assert promql_metric_names(expr) == {
        "warmstart_agent_peer_errors_total",
        "up",
        "warmstart_agent_store_budget_bytes",
        "bogus_metric",
    }
    assert promql_metric_names("label_values(warmstart_endpoint_replicas, endpoint)") == {
        "warmstart_endpoint_replicas"
    }


def _unknown(expressions: list[tuple[str, str]], exported: dict[str, str]) -> list[str]:
    bad = []
    for where, expr in expressions:
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        bad += [f"{where}: {n}" for n in sorted(names - exported.keys() - PROMETHEUS_SERIES)]
    return bad


def test_alert_rules_use_exported_metrics(exported: dict[str, str]) -> None:
    rules = load_one(RULES_FILE)
    assert rules["apiVersion"] == "monitoring.coreos.com/v1" and rules["kind"] == "PrometheusRule"
    expressions = list(rule_expressions(rules))
    alerts = {where.split("/", 1)[1] for where, _ in expressions}
    assert {
        "WarmstartAgentDown",
        "WarmstartStoreOverBudget",
        "WarmstartUpstreamErrors",
        "WarmstartPeersUnreachable",
    } <= alerts
    assert _unknown(expressions, exported) == []


def test_dashboard_uses_exported_metrics(exported: dict[str, str]) -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    expressions = list(dashboard_expressions(dashboard))
    assert len(expressions) >= 15
    assert _unknown(expressions, exported) == []


def test_dashboard_covers_agents_and_endpoints(exported: dict[str, str]) -> None:
    used = set().union(
        *(promql_metric_names(e) for _, e in dashboard_expressions(load_dashboard()))
    )
    for name in (
        "warmstart_agent_served_bytes_total",  # bytes by source
        "warmstart_agent_fetched_bytes_total",
        "warmstart_agent_cache_hits_total",  # hit ratio
        "warmstart_agent_cache_misses_total",
        "warmstart_agent_transfers_in_flight",
        "warmstart_agent_store_usage_bytes",  # use vs budget
        "warmstart_agent_store_budget_bytes",
        "warmstart_agent_upstream_errors_total",
        "warmstart_agent_peer_errors_total",
        "warmstart_endpoint_replicas",  # replicas by state
        "warmstart_endpoint_queue_length",
    ):
        assert name in used, name


def test_a_renamed_metric_would_be_caught(exported: dict[str, str]) -> None:
    rules = load_one(RULES_FILE)
    expressions = [
        (w, e.replace("warmstart_agent_store_budget_bytes", "warmstart_agent_store_limit_bytes"))
        for w, e in rule_expressions(rules)
    ]
    assert any("warmstart_agent_store_limit_bytes" in b for b in _unknown(expressions, exported))


def _panel_ids(panels: list[dict[str, Any]]) -> list[int]:
    return [p["id"] for p in panels] + [i for p in panels for i in _panel_ids(p.get("panels", []))]


def test_dashboard_shape() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "warmstart"
    ids = _panel_ids(dashboard["panels"])
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]


def test_error_kinds_in_rules_are_real() -> None:
    """``kind`` label values the rules match on are the fetcher's SourceError kinds."""
    import re

    from warmstart.fetch import source

    kinds = {
        cls.kind
        for cls in vars(source).values()
        if isinstance(cls, type) and issubclass(cls, source.SourceError)
    }
    used: set[str] = set()
    for _, expr in rule_expressions(load_one(RULES_FILE)):
        for value in re.findall(r'\bkind\s*(?:=|!=|=~|!~)\s*"([^"]*)"', expr):
            used |= set(value.split("|"))
    assert used and used <= kinds, used - kinds
