"""Run ``crdguard serve`` as a real process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .cluster import ControlPlane, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDGUARD = [sys.executable, "-m", "webhook.cli"]


def make_certs(out: Path, hosts: str = "127.0.0.1,localhost") -> str:
    """Writes ca.crt/tls.crt/tls.key with ``crdguard certs``; returns the base64 caBundle."""
    done = subprocess.run(
        [*CRDGUARD, "certs", "--out", str(out), "--hosts", hosts], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


class Guard:
    """One ``crdguard serve`` process; its stderr (JSON log lines) goes to ``log_path``."""

    def __init__(self, workdir: Path, args: list[str], port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.cert_dir = workdir / "certs"
        if not (self.cert_dir / "tls.crt").exists():
            self.ca_bundle = make_certs(self.cert_dir)
        else:
            self.ca_bundle = ""
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = workdir / f"crdguard-{self.port}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                *CRDGUARD,
                "serve",
                "--cert-dir",
                str(self.cert_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                "--enable-state-endpoint",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.context = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, context=self.context, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + path, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"crdguard exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, last = self.get("/readyz")
                if status == 200:
                    return
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"crdguard not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def state(self) -> dict[str, Any]:
        """/state from the metrics port (plain HTTP, enabled for these tests)."""
        url = f"http://127.0.0.1:{self.metrics_port}/state"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return dict(json.loads(response.read()))

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def register_with_the_chart(cluster: ControlPlane, running: Guard) -> None:
    """Registers ``running`` through the chart's own ValidatingWebhookConfiguration (``webhook.url``)."""
    rendered = cluster.helm(
        "template",
        "crdguard",
        str(REPO_ROOT / "charts" / "crdguard"),
        "--namespace",
        "crdguard",
        "--set",
        f"webhook.url={running.url}/validate",
        "--set",
        "tls.mode=existingSecret",
        "--set",
        "tls.existingSecret=unused-outside-cluster",
        "--set",
        f"tls.caBundle={running.ca_bundle}",
        "--show-only",
        "templates/webhook.yaml",
    ).stdout
    # The webhooks crdguard would register (--register-webhook), from the ConfigMap the chart renders.
    configs = [
        yaml.safe_load(d["data"]["webhook.yaml"])
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ConfigMap"
    ]
    assert len(configs) == 1, rendered
    for webhook in configs[0]["webhooks"]:
        assert webhook["clientConfig"]["url"] == f"{running.url}/validate"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(configs[0]))
