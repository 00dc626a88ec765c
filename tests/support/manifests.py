"""Reading deploy/kubernetes: YAML documents, the ImageCache CRD's schema as JSON Schema, the
metric names the code exports, and the metric names a PromQL expression uses."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
MONITORING = DEPLOY / "monitoring"
CRD_FILE = BASE / "crd-imagecache.yaml"
EXAMPLES_FILE = DEPLOY / "examples" / "imagecache.yaml"
DASHBOARD_FILE = MONITORING / "warmstart-dashboard.json"
RULES_FILE = MONITORING / "prometheusrule-warmstart.yaml"
SRC = ROOT / "src" / "warmstart"


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_docs(path)
    assert len(docs) == 1, f"{path}: {len(docs)} documents, expected 1"
    return docs[0]


def render(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` as a list of objects (fails the test with kubectl's stderr)."""
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(objs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


# -- the CRD's schema, as Kubernetes validates it --------------------------------------------


def crd_version_schema(crd: dict[str, Any], version: str = "v1alpha1") -> dict[str, Any]:
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"CRD has no version {version}")


def to_json_schema(node: Any) -> Any:
    """A structural OpenAPI v3 schema (a CRD's) as JSON Schema with Kubernetes' semantics:

    - ``x-kubernetes-int-or-string: true``: an integer or a string (``anyOf``); value
      validations (``minimum`` for the integer, ``pattern`` for the string) still apply, as JSON
      Schema applies each only to its own type;
    - ``nullable: true``: null is allowed too;
    - an object with ``properties`` and neither ``additionalProperties`` nor
      ``x-kubernetes-preserve-unknown-fields`` takes no other fields: the API server would prune
      them, ``kubectl apply`` (field validation Strict) rejects them;
    - other ``x-kubernetes-*`` extensions (CEL rules, list types) are left out: JSON Schema cannot
      evaluate them.
    """
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key == "default":
            out[key] = copy.deepcopy(value)
        else:
            out[key] = to_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        assert "type" not in node, "int-or-string must not have a type (structural schema)"
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def crd_validator(crd: dict[str, Any]) -> jsonschema.Draft202012Validator:
    schema = to_json_schema(crd_version_schema(crd))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)


def schema_errors(validator: jsonschema.Draft202012Validator, obj: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


# -- metric names ------------------------------------------------------------------------------

# A constructor, or a module's factory named after one (``counter(``, ``self._gauge(``).
_METRIC_CTOR = re.compile(
    r"\b_?(Counter|Gauge|Histogram|Summary|Info|Enum|counter|gauge)\(\s*\"([a-zA-Z_:][\w:]*)\""
)


def exported_metric_names(src: Path = SRC) -> dict[str, str]:
    """Every series name the code's metrics modules expose (``*/metrics.py``), as Prometheus
    sees it: counters get ``_total`` (and ``_created``), histograms ``_bucket``/``_sum``/
    ``_count``. Name -> the module it comes from."""
    names: dict[str, str] = {}
    for module in sorted(src.glob("**/metrics.py")):
        rel = str(module.relative_to(src.parent))
        for found, name in _METRIC_CTOR.findall(module.read_text()):
            kind = found.capitalize()
            if kind == "Counter":
                base = name.removesuffix("_total")
                series = [f"{base}_total", f"{base}_created"]
            elif kind in ("Histogram", "Summary"):
                series = [f"{name}_sum", f"{name}_count", f"{name}_created"]
                if kind == "Histogram":
                    series.append(f"{name}_bucket")
            elif kind == "Info":
                series = [f"{name}_info"]
            else:
                series = [name]
            for s in series:
                names[s] = rel
    return names


# Series Prometheus itself makes for every scrape target, not the code.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_PROMQL_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
        "bool", "offset", "atan2", "inf", "nan", "start", "end",
    }
)  # fmt: skip
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (in ``{...}`` or ``by (...)``), strings, durations or Grafana variables.
    ``label_values(EXPR, LABEL)`` (a Grafana variable query) counts EXPR only."""
    text = re.sub(r"label_values\(\s*([^,()]+(?:\{[^}]*\})?)\s*,\s*\w+\s*\)", r"\1", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', " ", text)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = _CLAUSE.sub(" ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = re.sub(r"(?<![\w.])\d[\w.]*", " ", text)  # numbers (1e-9, 0.95)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", text):
        word = m.group(0)
        if word in _PROMQL_KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end() :]):
            continue  # a function
        names.add(word)
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every panel target and templating query."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                yield f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]
            yield f"variable {var['name']!r}", q["query"] if isinstance(q, dict) else q


def rule_expressions(rule_obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for group in rule_obj["spec"]["groups"]:
        for rule in group["rules"]:
            yield f"{group['name']}/{rule.get('alert') or rule.get('record')}", rule["expr"]


def load_dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())
