"""A real ``crdguard serve``: admission on its port, metrics (and opt-in /state) on their own."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

import pytest
from relkit.rawhttp import LOOPBACK
from relkit.reviews import DEMO_CLUSTER, incident_review
from relkit.serve import Serve

pytestmark = pytest.mark.slow  # real server processes


def plain_get(host: str, port: int, path: str) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("port", "path", "status"),
    [
        pytest.param("admission", "/healthz", 200, id="the admission port answers /healthz"),
        pytest.param("admission", "/readyz", 200, id="the admission port answers /readyz"),
        pytest.param("admission", "/metrics", 404, id="the admission port does not serve /metrics"),
        pytest.param("admission", "/state", 404, id="the admission port does not serve /state"),
        pytest.param("admission", "/openapi.json", 404, id="the admission port does not serve its schema"),
        pytest.param("metrics", "/metrics", 200, id="the metrics port serves /metrics over plain HTTP"),
        pytest.param("metrics", "/state", 404, id="the metrics port serves /state only when enabled"),
        pytest.param("metrics", "/validate", 404, id="the metrics port does not judge reviews"),
    ],
)
def test_each_port_serves_only_its_paths(cert_dir: Path, port: str, path: str, status: int) -> None:
    with Serve("--cluster", str(DEMO_CLUSTER), cert_dir=cert_dir, enable_state=False) as serve:
        assert serve.review(incident_review("ports"))["allowed"] is False
        if port == "admission":
            found = serve.get(path)[0]
        else:
            found = plain_get(LOOPBACK, serve.metrics_port, path)
    assert found == status


def test_enable_state_endpoint_serves_the_inventory_on_the_metrics_port(cert_dir: Path) -> None:
    with Serve("--cluster", str(DEMO_CLUSTER), cert_dir=cert_dir) as serve:
        state = serve.state()
        assert serve.get("/state")[0] == 404
    assert state["objects"]["ComponentRelease"] == 1


def test_metrics_host_binds_only_that_address(cert_dir: Path) -> None:
    """127.0.0.2 stands for a pod-local address: the metrics port listens there and nowhere else."""
    with Serve("--cluster", str(DEMO_CLUSTER), "--metrics-host", "127.0.0.2", cert_dir=cert_dir) as serve:
        assert plain_get("127.0.0.2", serve.metrics_port, "/metrics") == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, serve.metrics_port), timeout=10).close()
