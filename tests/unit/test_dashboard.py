"""The chart's Grafana dashboard and PrometheusRule query only metrics crdguard exports.

The exported names come from crdguard's own registry (the admission metrics and the
collector over a cluster state that has conflicts, watches and a PolicyReport writer), so a
renamed metric fails here instead of leaving an empty panel or an alert that never fires."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from helpers import REPO_ROOT

from webhook.admission.app import Metrics, StateCollector

CHART = REPO_ROOT / "charts" / "crdguard"
DASHBOARD = CHART / "dashboards" / "crdguard.json"
METRIC = re.compile(r"\bcrdguard_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


class ServingState:
    """What a serving replica's state reports: every optional part present."""

    view: Any = None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, str]:
        return True, "synced"

    def describe(self) -> dict[str, Any]:
        conflict = {
            "rule": "r",
            "component": "c",
            "kind": "Deployment",
            "namespace": "n",
            "name": "x",
            "crd": "d",
        }
        watch = {
            "connected": True,
            "synced": True,
            "secondsSinceLastSync": 1.0,
            "relistsAfterGone": 0,
            "errors": 0,
        }
        return {
            "objects": {"Deployment": 1},
            "apiRequests": 3,
            "conflicts": [conflict],
            "policyReports": {"leader": True, "identity": "a", "writes": 2},
            "watches": {"deployments": watch},
        }


def exported() -> dict[str, set[str]]:
    """Every sample name a serving crdguard exports, with its label names."""
    metrics = Metrics()
    metrics.registry.register(StateCollector(ServingState()))  # type: ignore[arg-type]
    # Labelled series exist once used: one review, one refused request.
    metrics.reviews.labels("denied", "r").inc()
    metrics.latency.observe(0.001)
    metrics.rejected.labels("415").inc()
    samples: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        for suffix in SUFFIXES[family.type]:
            samples[family.name + suffix] = labels
    return samples


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_is_a_grafana_dashboard_with_distinct_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["uid"], dashboard["title"]) == ("crdguard", "crdguard")
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels)
    for panel in panels:
        assert (
            set(panel["gridPos"]) == {"x", "y", "w", "h"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["targets"] and panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )


@pytest.mark.parametrize(
    ("title", "expr"), expressions(), ids=[f"panel {t!r}: {e}" for t, e in expressions()]
)
def test_every_panel_queries_metrics_crdguard_exports(title: str, expr: str) -> None:
    names = METRIC.findall(expr)
    assert names, f"{title}: queries no crdguard metric"
    samples = exported()
    assert [n for n in names if n not in samples] == []
    for labels in re.findall(r"by \(([^)]*)\)", expr):
        grouped = {label.strip() for label in labels.split(",")} - {"le"}
        assert grouped <= set().union(*(samples[n] for n in names)), f"{title}: groups by unknown labels"


@pytest.mark.parametrize(
    "metric",
    [
        pytest.param("crdguard_conflicts", id="conflicts by component and rule"),
        pytest.param("crdguard_admission_reviews_total", id="reviews and decisions"),
        pytest.param("crdguard_admission_review_duration_seconds_bucket", id="latency"),
    ],
)
def test_the_dashboard_shows(metric: str) -> None:
    assert any(metric in METRIC.findall(expr) for _, expr in expressions())


def test_the_alert_expression_names_the_conflicts_gauge_and_its_labels() -> None:
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    (expr,) = re.findall(r"^\s*expr: (.+)$", template, re.MULTILINE)
    assert METRIC.findall(expr) == ["crdguard_conflicts"]
    (grouped,) = re.findall(r"by \(([^)]*)\)", expr)
    assert {label.strip() for label in grouped.split(",")} == exported()["crdguard_conflicts"]
