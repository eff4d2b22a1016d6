"""Metrics (and, when asked for, ``/state``) on their own port, apart from admission.

The admission port answers only the API server and the kubelet's probes; Prometheus scrapes
this one, which a NetworkPolicy can open to the monitoring namespace alone (controller-runtime
and Kyverno split them the same way). Plain HTTP by default; bind it to 127.0.0.1 for a
sidecar proxy, or give it a certificate directory for TLS.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from webhook.admission.app import ClusterState, Metrics
from webhook.admission.tls import ReloadingTLS

log = logging.getLogger("crdguard.metrics")

# A scraper that stops mid-request must not hold a thread for long.
_CLIENT_TIMEOUT_SECONDS = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, generate_latest(self.server.metrics.registry))
        elif path == "/state" and self.server.state is not None:
            self._answer(200, "application/json", json.dumps(self.server.state.describe()).encode())
        else:
            body = json.dumps({"error": f"no such path: {path}", "status": 404}).encode()
            self._answer(404, "application/json", body)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Metrics,
        state: ClusterState | None,
        tls: ReloadingTLS | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics = metrics
        self.state = state
        self.tls = tls
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, so a slow TLS handshake blocks no one else.
        request.settimeout(_CLIENT_TIMEOUT_SECONDS)
        if self.tls is not None:
            request = self.tls.context.wrap_socket(request, server_side=True)
        _Handler(request, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics connection from %s ended with an error", client_address, exc_info=True)


class MetricsServer:
    """``/metrics`` always, ``/state`` only when ``state`` is given, on ``host:port``."""

    def __init__(
        self,
        metrics: Metrics,
        host: str,
        port: int,
        state: ClusterState | None = None,
        tls: ReloadingTLS | None = None,
    ) -> None:
        self._server = _Server((host, port), metrics, state, tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="crdguard-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
