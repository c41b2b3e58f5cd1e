"""The ops kit under deploy/ cannot rot: the gateway's unit runs a valid command line, the
Prometheus config loads its rules, and every metric named by an alert rule or a Grafana panel is
exported by a live gateway or neuron."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cortex.gateway.server import build_parser

from ..faults.servers import ADMIN, API
from ..helpers import chat
from .conftest import Ops

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).parents[2] / "deploy"
PROMETHEUS_BUILTINS = {"up"}  # made by Prometheus itself for each scrape target
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "cortex-alerts.yml").read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"]
            found.append(rule["expr"])
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "cortex-dashboard.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        found += [target["expr"] for target in panel["targets"]]
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS or re.fullmatch(r"e\d*", word):
            continue
        names.add(word)
    return names


def exported(text: str) -> set[str]:
    """Every metric name in a Prometheus text exposition (HELP/TYPE lines and samples)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_metric_names_are_extracted_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(foo_seconds_bucket{a="x"}[5m]))) '
        "> 10 and on (node) bar_total / clamp_min(baz, 1e-9)"
    )
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total", "baz"}


def test_every_metric_of_the_rules_and_dashboard_is_exported(ops: Ops) -> None:
    url = ops.gateway.url
    reply = httpx.post(f"{url}/v1/chat/completions", json=chat("m1"), headers=API, timeout=30)
    assert reply.status_code == 200
    streamed = httpx.post(
        f"{url}/v1/chat/completions", json=chat("m1", stream=True), headers=API, timeout=30
    )
    assert streamed.status_code == 200  # TTFT and tok/s are measured on streams
    httpx.post(f"{url}/admin/models/load", json={"model": "m2"}, headers=ADMIN, timeout=30)
    live = exported(httpx.get(f"{ops.gateway.metrics_url}/metrics", timeout=10).text)
    for neuron in ops.neurons.values():
        live |= exported(httpx.get(f"{neuron.url}/metrics", timeout=10).text)
    expressions = rule_expressions() + dashboard_expressions()
    assert len(expressions) > 20
    wanted = set().union(*(metric_names(e) for e in expressions))
    missing = sorted(n for n in wanted - PROMETHEUS_BUILTINS if n not in live)
    assert not missing, f"named in deploy/ but exported by no live server: {missing}"
    assert {"cortex_node_up", "cortex_neuron_kv_cache_usage_ratio"} <= wanted


def test_prometheus_scrapes_both_servers_and_loads_the_rules() -> None:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert all((DEPLOY / "prometheus" / f).exists() for f in config["rule_files"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"cortex-gateway", "cortex-neuron"}
    assert jobs["cortex-neuron"]["authorization"]["credentials_file"]  # neurons need the token
    assert all(t.endswith(":31314") for t in jobs["cortex-gateway"]["static_configs"][0]["targets"])


def test_the_gateway_unit_runs_a_valid_command_line() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "cortex-gateway.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    program, *args = unit["Service"]["ExecStart"].split()
    assert program.endswith("/cortex-gateway")
    parsed = build_parser().parse_args(args)
    assert parsed.config == "/etc/cortex/cortex.toml" and parsed.log_format == "json"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["EnvironmentFile"].endswith("gateway.env")
