"""A real ``crdguard serve`` process on 127.0.0.1, and clients that speak to it."""

from __future__ import annotations

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

LOOPBACK = "127.0.0.1"
# Logs live until the test process exits: failure messages quote them, nothing else needs them.
_LOG_DIR = Path(tempfile.mkdtemp(prefix="crdguard-serve-logs-"))
atexit.register(shutil.rmtree, _LOG_DIR, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_certs(directory: Path, hosts: str = f"{LOOPBACK},localhost") -> Path:
    """A CA and a serving pair from ``crdguard certs`` (what the docs tell users to run)."""
    subprocess.run(
        [sys.executable, "-m", "webhook.cli", "certs", "--out", str(directory), "--hosts", hosts],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return directory


def client_context(
    ca_file: Path | str | None, cert: Path | str | None = None, key: Path | str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def peer_serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


class Serve:
    """``crdguard serve`` as the chart runs it, on a free port, logging to a file."""

    def __init__(
        self,
        *args: str,
        cert_dir: Path | str | None = None,
        ca_file: Path | str | None = None,
        client_cert: tuple[Path | str, Path | str] | None = None,
        port: int | None = None,
        log_level: str = "info",
        env: Mapping[str, str] | None = None,
        check_hostname: bool = True,
        enable_state: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.cert_dir = Path(cert_dir) if cert_dir else None
        self.tls = cert_dir is not None
        self.ca_file = Path(ca_file) if ca_file else (self.cert_dir / "ca.crt" if self.cert_dir else None)
        self.client_cert = client_cert
        # False for certificates that name only the in-cluster Service, not 127.0.0.1.
        self.check_hostname = check_hostname
        self.argv = [
            sys.executable,
            "-m",
            "webhook.cli",
            "--log-level",
            log_level,
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            *(["--enable-state-endpoint"] if enable_state else []),
            *(["--cert-dir", str(cert_dir)] if cert_dir else ["--insecure"]),
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="serve-", suffix=".log", dir=_LOG_DIR)[1])
        self.popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self, ready: bool = True, timeout: float = 60.0) -> Serve:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.wait_path("/readyz" if ready else "/healthz", timeout)
        return self

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def wait_path(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"crdguard serve exited early:\n{self.log_text()[-3000:]}")
            try:
                status, body = self.get(path, timeout=5)
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"{path} not 200 after {timeout}s ({last}):\n{self.log_text()[-3000:]}")

    # -- clients -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    def context(self) -> ssl.SSLContext:
        cert, key = self.client_cert if self.client_cert else (None, None)
        context = client_context(self.ca_file, cert, key)
        context.check_hostname = self.check_hostname
        return context

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(LOOPBACK, self.port, timeout=timeout, context=self.context())
        return http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, bytes]:
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        return self.request("GET", path, timeout=timeout)

    def post(
        self, body: bytes, content_type: str = "application/json", timeout: float = 30.0
    ) -> tuple[int, bytes]:
        return self.request("POST", "/validate", body, {"Content-Type": content_type}, timeout)

    def review(self, review: Mapping[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        status, body = self.post(json.dumps(review).encode(), timeout=timeout)
        assert status == 200, (status, body[:500])
        response: dict[str, Any] = json.loads(body)["response"]
        return response

    def metrics_get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        """GET from the metrics port (plain HTTP): /metrics, and /state (enabled here)."""
        conn = http.client.HTTPConnection(LOOPBACK, self.metrics_port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def state(self) -> dict[str, Any]:
        status, body = self.metrics_get("/state")
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``{'name{labels}': value}``."""
        status, body = self.metrics_get("/metrics")
        assert status == 200, body
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


def serve_argv_for(kubeconfig: Path | str | None = None, cluster: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    if kubeconfig:
        args += ["--kubeconfig", str(kubeconfig)]
    for path in cluster:
        args += ["--cluster", str(path)]
    return args
