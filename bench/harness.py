"""Processes the benchmark runs: servers pinned to one core, the load generator to the other.

Every server listens on 127.0.0.1 only, with the same certificates. Nothing here
knows which numbers matter; bench/run.py decides what to run and how to report.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
VENV_BIN = Path(sys.executable).parent


class BenchError(RuntimeError):
    """A server did not start, or a load run failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cores:
    """Which core the load generator and the servers run on (None: not pinned)."""

    loadgen: int | None
    server: int | None

    @classmethod
    def pick(cls) -> Cores:
        if shutil.which("taskset") is None:
            return cls(None, None)
        spec = os.environ.get("CRDGUARD_BENCH_CPUS")  # "loadgen,server", e.g. "0,1"
        if spec:
            a, b = (int(x) for x in spec.split(","))
            return cls(a, b)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls(cpus[0], cpus[1])

    def pin(self, argv: Sequence[str], core: int | None) -> list[str]:
        return ["taskset", "-c", str(core), *argv] if core is not None else list(argv)


def tls_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def https_request(
    port: int, ca_file: Path, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls_context(ca_file), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` from /proc/<pid>/status (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise BenchError(f"no VmRSS for pid {pid}")


@dataclass
class Server:
    """One server process: a name, its argv, the https port and path it answers reviews on."""

    name: str
    argv: list[str]
    port: int
    review_path: str
    health_path: str
    ca_file: Path
    log_path: Path
    env: Mapping[str, str] | None = None
    metrics_port: int | None = None  # crdguard's plain-HTTP /metrics and /state port
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: TextIO | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{self.review_path}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout: float = 120.0) -> None:
        self._log = self.log_path.open("a")
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}:\n{self.tail()}"
                )
            try:
                status, body = https_request(self.port, self.ca_file, "GET", self.health_path, timeout=2)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                last = repr(exc)
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"{self.name} not ready after {timeout:.0f}s ({last}); see {self.log_path}")

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def metrics_get(self, path: str) -> bytes:
        """GET ``path`` (/metrics or /state) from crdguard's metrics port, plain HTTP."""
        if self.metrics_port is None:
            raise BenchError(f"{self.name} has no metrics port")
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise BenchError(f"{self.name}: GET {path} on the metrics port answered {response.status}")
        return body

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def crdguard_server(
    port: int,
    cert_dir: Path,
    work: Path,
    cores: Cores,
    *,
    cluster: Path | None = None,
    kubeconfig: Path | None = None,
    catalog_files: Sequence[Path] | None = None,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Server:
    """``crdguard serve`` as shipped (default flags, default log level), pinned to the server core.

    ``catalog_files`` replaces the packaged catalog with those files (bench/catalog_serve.py);
    without it the packaged catalog is used, as deployed.
    """
    metrics_port = free_port()
    flags = [
        "serve", "--cert-dir", str(cert_dir), "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), "--enable-state-endpoint",
    ]  # fmt: skip
    if cluster is not None:
        flags += ["--cluster", str(cluster)]
    if kubeconfig is not None:
        flags += ["--kubeconfig", str(kubeconfig)]
    if catalog_files is None:
        argv = [str(VENV_BIN / "crdguard"), *flags]
    else:
        only = [a for f in catalog_files for a in ("--catalog-file", str(f))]
        argv = [sys.executable, "-m", "bench.catalog_serve", *only, "--", *flags]
        env = {"PYTHONPATH": str(REPO_ROOT), **(env or {})}
    name = name or ("crdguard" if kubeconfig is None else "crdguard-watch")
    return Server(
        name,
        cores.pin(argv, cores.server),
        port,
        "/validate",
        "/readyz",
        cert_dir / "ca.crt",
        work / f"{name}-{port}.log",
        env=env,
        metrics_port=metrics_port,
    )


def floor_server(port: int, cert_dir: Path, work: Path, cores: Cores, decode: str = "uid") -> Server:
    """The floor (``decode="uid"``) or the json.loads reference (``decode="json-loads"``)."""
    name = "floor" if decode == "uid" else f"floor-{decode}"
    argv = [
        sys.executable, "-m", "bench.floor", "--cert-dir", str(cert_dir), "--port", str(port),
        "--decode", decode,
    ]  # fmt: skip
    return Server(
        name,
        cores.pin(argv, cores.server),
        port,
        "/validate",
        "/healthz",
        cert_dir / "ca.crt",
        work / f"{name}.log",
        env={"PYTHONPATH": str(REPO_ROOT)},
    )


def opa_server(opa: Path, port: int, cert_dir: Path, data_dir: Path, work: Path, cores: Cores) -> Server:
    argv = [
        str(opa), "run", "--server", "--addr", f"127.0.0.1:{port}",
        "--tls-cert-file", str(cert_dir / "tls.crt"), "--tls-private-key-file", str(cert_dir / "tls.key"),
        "--log-level", "error", "--skip-version-check", "--disable-telemetry",
        str(BENCH_DIR / "opa" / "crdguard.rego"), str(data_dir),
    ]  # fmt: skip
    return Server(
        "opa",
        cores.pin(argv, cores.server),
        port,
        "/v0/data/crdguard/review",
        "/health",
        cert_dir / "ca.crt",
        work / "opa.log",
    )


@dataclass(frozen=True)
class LoadGen:
    binary: Path
    payload_dir: Path
    ca_file: Path
    cores: Cores

    def run(self, url: str, mode: str, *, timeout: float | None = None, **options: Any) -> dict[str, Any]:
        argv = [
            str(self.binary),
            "-url",
            url,
            "-ca",
            str(self.ca_file),
            "-payloads",
            str(self.payload_dir),
            "-mode",
            mode,
        ]
        for key, value in options.items():
            if value is None:
                continue
            argv += [f"-{key}", str(value)]
        budget = timeout or 60 + float(str(options.get("duration", "10s")).rstrip("s")) * 2
        result = subprocess.run(
            self.cores.pin(argv, self.cores.loadgen), capture_output=True, text=True, timeout=budget
        )
        if result.returncode != 0:
            raise BenchError(f"loadgen failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def verdicts(self, url: str, classes: str | None = None) -> dict[str, Any]:
        report = self.run(url, "verify", **{"class": classes, "conns": 1})
        return report


def python_verdicts(server: Server, payload_dir: Path) -> dict[str, Any]:
    """The verify pass without the Go load generator: each payload once, over one TLS connection."""
    manifest = json.loads((payload_dir / "manifest.json").read_text())
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=tls_context(server.ca_file), timeout=10
    )
    out = []
    errors = 0
    try:
        for entry in manifest["payloads"]:
            body = (payload_dir / entry["file"]).read_bytes()
            conn.request("POST", server.review_path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
            item: dict[str, Any] = {"file": entry["file"], "class": entry["class"], "status": response.status}
            try:
                answer = json.loads(raw)["response"]
                item["allowed"] = answer["allowed"]
                item["uid_echoed"] = answer["uid"] == entry["uid"]
            except (ValueError, KeyError, TypeError):
                item["allowed"] = None
                item["uid_echoed"] = False
            if response.status != 200 or not item["uid_echoed"] or not isinstance(item["allowed"], bool):
                errors += 1
                item["error"] = raw[:200].decode(errors="replace")
            out.append(item)
    finally:
        conn.close()
    return {"requests": len(out), "errors": errors, "verdicts": out}


def compare_verdicts(reference: Mapping[str, Any], other: Mapping[str, Any]) -> list[str]:
    """Files on which two verify passes disagree (or either failed)."""
    mine = {v["file"]: v for v in reference["verdicts"]}
    theirs = {v["file"]: v for v in other["verdicts"]}
    problems = []
    for name in sorted(set(mine) | set(theirs)):
        a, b = mine.get(name), theirs.get(name)
        if a is None or b is None:
            problems.append(f"{name}: answered by one server only")
        elif a.get("error") or b.get("error"):
            problems.append(f"{name}: error {a.get('error') or b.get('error')}")
        elif a["allowed"] != b["allowed"]:
            problems.append(f"{name}: allowed={a['allowed']} vs allowed={b['allowed']}")
    return problems


def opa_binary() -> Path | None:
    """The cached OPA binary (bench/tools.sh env), or None when it has not been built."""
    path = Path(tool_env()["CRDGUARD_OPA"])
    return path if os.access(path, os.X_OK) else None


def loadgen_binary() -> Path | None:
    path = Path(tool_env()["CRDGUARD_LOADGEN"])
    return path if os.access(path, os.X_OK) else None


def tool_env() -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(BENCH_DIR / "tools.sh"), "env"], capture_output=True, text=True, check=True
    )
    env = {}
    for line in result.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def build_tool(which: str) -> None:
    result = subprocess.run(["bash", str(BENCH_DIR / "tools.sh"), which], capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"bench/tools.sh {which} failed:\n{result.stderr[-3000:]}")


def make_certs(cert_dir: Path) -> None:
    subprocess.run(
        [str(VENV_BIN / "crdguard"), "certs", "--out", str(cert_dir), "--hosts", "127.0.0.1,localhost"],
        check=True,
        capture_output=True,
    )
