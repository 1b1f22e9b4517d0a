"""The operator kit in deploy/: alerting rules (promtool), the Grafana dashboard against a live /metrics, the
docker-compose file and the Helm chart (rendered here: helm is not installable from this machine's registries)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.settings import load_settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMQL_NAME = re.compile(r"\b(gateway_[a-z_]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:  # pragma: no cover - scripts/test installs it
        pytest.fail("promtool is not installed: run scripts/test, which installs it")
    return subprocess.run([binary, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60)


def test_the_alerting_rules_are_valid_and_their_tests_pass() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


async def live_metric_names() -> set[str]:
    """Every metric family a gateway with all its systems on exports (the shipped compose config)."""
    text = (DEPLOY / "compose" / "gateway.yaml").read_text()
    environ = {"POSTGRES_PASSWORD": "x", "GATEWAY_ADMIN_KEY": "admin-key-0001", "SHORTENER_SECRET": "s3cret-for-tests"}
    settings = parse_settings(text, environ=environ)
    # In-process and embedded here: the metric names are the same on every engine.
    embedded = parse_settings(
        text.replace("kind: redis", "kind: embedded").replace(
            "postgresql://gateway:${POSTGRES_PASSWORD}@postgres:5432/gateway", '"sqlite:///:memory:"'
        ),
        environ=environ,
    )
    assert settings.engine.kind == "redis"
    app = create_app(embedded)
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            body = (await client.get("/metrics")).text
    finally:
        await app.shutdown()
    names: set[str] = set()
    for family in text_string_to_metric_families(body):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


async def test_every_dashboard_and_alert_query_uses_metrics_the_gateway_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "gateway.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    queries += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for query in queries for name in PROMQL_NAME.findall(query)}
    exported = await live_metric_names()
    assert used, "no queries found"
    assert used - exported == set()
    assert len(dashboard["panels"]) >= 10


def test_the_compose_file_wires_two_replicas_to_shared_engines() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway-1", "gateway-2", "redis", "postgres", "upstream", "prometheus", "grafana"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["gateway-1:8080", "gateway-2:8080"]
    env = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text().splitlines() if "=" in line)
    path = DEPLOY / "compose" / "gateway.yaml"
    settings = load_settings(path, environ={k.strip(): v for k, v in env.items() if not k.startswith("#")})
    assert settings.engine.kind == "redis" and settings.engine.database.url.startswith("postgresql://")
    assert settings.ratelimit.replicas == 2


# -- a renderer for the subset of Helm's template language the chart uses --------------------------------------

_ACTION = re.compile(r"([ \t]*)\{\{(-?)\s*(.*?)\s*(-?)\}\}(\n?)", re.S)


def _lookup(path: str, context: dict[str, Any]) -> Any:
    value: Any = context
    for part in path.lstrip(".").split("."):
        value = value[part]
    return value


def _evaluate(expression: str, context: dict[str, Any]) -> Any:
    stages = [stage.strip() for stage in expression.split("|")]
    head = stages[0]
    value = (
        yaml.safe_dump(_lookup(head[7:], context), sort_keys=False).rstrip()
        if head.startswith("toYaml ")
        else (_lookup(head, context))
    )
    for stage in stages[1:]:
        if stage == "quote":
            value = json.dumps(str(value))
        elif stage.startswith("nindent "):
            pad = " " * int(stage.split()[1])
            value = "\n" + "\n".join(pad + line if line else line for line in str(value).rstrip("\n").split("\n"))
        else:  # pragma: no cover - a function the chart does not use
            raise ValueError(f"unsupported template function {stage!r}")
    return value


def render(template: str, context: dict[str, Any]) -> str:
    out: list[str] = []
    skipping: list[bool] = []
    position = 0
    for match in _ACTION.finditer(template):
        indent, left, expression, right, newline = match.groups()
        text = template[position : match.start()]
        if left:
            text = text.rstrip(" \t\n")
            indent = ""
        if not any(skipping):
            out.append(text)
        position = match.end()
        if expression.startswith("if "):
            skipping.append(not _evaluate(expression[3:], context))
            continue
        if expression == "end":
            skipping.pop()
            continue
        if not any(skipping):
            out.append(indent + str(_evaluate(expression, context)) + ("" if right else newline))
        if right:
            while position < len(template) and template[position] in " \t\n":
                position += 1
    out.append(template[position:])
    return "".join(out)


def test_the_helm_chart_renders_to_valid_kubernetes_objects() -> None:
    chart = DEPLOY / "helm" / "gateway"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    context = {"Values": values, "Release": {"Name": "edge"}, "Chart": meta}
    objects: dict[str, Any] = {}
    for template in sorted((chart / "templates").glob("*.yaml")):
        rendered = render(template.read_text(), context)
        document = yaml.safe_load(rendered)
        if document is not None:
            objects[document["kind"]] = document
    assert set(objects) == {"ConfigMap", "Secret", "Service", "Deployment"}  # no ServiceMonitor unless enabled
    deployment = objects["Deployment"]["spec"]
    container = deployment["template"]["spec"]["containers"][0]
    assert deployment["replicas"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["envFrom"][0]["secretRef"]["name"] == objects["Secret"]["metadata"]["name"]
    assert objects["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]
    # The ConfigMap holds a configuration the gateway accepts.
    config = objects["ConfigMap"]["data"]["gateway.yaml"]
    assert parse_settings(config, environ=values["secretEnv"]).engine.kind == "redis"
    context["Values"] = {**values, "serviceMonitor": {"enabled": True, "interval": "15s"}}
    monitor = yaml.safe_load(render((chart / "templates" / "servicemonitor.yaml").read_text(), context))
    assert monitor["kind"] == "ServiceMonitor" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
