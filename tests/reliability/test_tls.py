"""TLS of a real ``crdguard serve``: 1.2 minimum, never plain HTTP without --insecure, and client
certificates required when --client-ca-file is given. (The same with a real kube-apiserver as
the client: tests/e2e/test_security.py.)"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.cluster import CertificateAuthority
from e2e.conftest import REPO_ROOT, locate_tools
from relkit.rawhttp import LOOPBACK
from relkit.report import Record
from relkit.reviews import DEMO_CLUSTER, incident_review, probe
from relkit.serve import Serve, make_certs

pytestmark = pytest.mark.slow  # real server processes; minutes, not seconds


def _legacy_client(version: ssl.TLSVersion, ca_file: Path) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(ca_file))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = version
        context.maximum_version = version
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """The negotiated version, or the error that ended the handshake."""
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname=LOOPBACK) as tls,
        ):
            return str(tls.version())
    except (OSError, ssl.SSLError) as exc:
        return f"refused ({type(exc).__name__})"


def _permissive_server(cert_dir: Path) -> tuple[int, threading.Thread]:
    """A control server that accepts TLS 1.0 to 1.3: proves the old clients below can speak."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_dir / "tls.crt"), str(cert_dir / "tls.key"))
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.TLSv1
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen()
    listener.settimeout(30)

    def accept() -> None:
        with listener:
            for _ in range(2):
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                        pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    return int(listener.getsockname()[1]), thread


def test_tls_1_2_is_the_minimum(cert_dir: Path) -> None:
    with Record(
        "security",
        "TLS 1.2 minimum",
        "Handshakes with a real `crdguard serve` pinned to each TLS version; a control server shows "
        "the TLS 1.0/1.1 clients work, so their refusal is crdguard's.",
    ) as rec:
        control_port, control = _permissive_server(cert_dir)
        old = {
            v: _legacy_client(v, cert_dir / "ca.crt") for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
        }
        control_results = {v.name: _handshake(control_port, c) for v, c in old.items()}
        control.join(10)
        with Serve("--cluster", str(DEMO_CLUSTER), cert_dir=cert_dir) as serve:
            results = {v.name: _handshake(serve.port, c) for v, c in old.items()}
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
                context.minimum_version = context.maximum_version = version
                results[version.name] = _handshake(serve.port, context)
        assert control_results == {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}
        assert results["TLSv1"].startswith("refused")
        assert results["TLSv1_1"].startswith("refused")
        assert results["TLSv1_2"] == "TLSv1.2"
        assert results["TLSv1_3"] == "TLSv1.3"
        rec.note(results=results, control=control_results)
        rec.done(
            "TLS 1.0 and 1.1 clients refused ("
            + results["TLSv1_1"].removeprefix("refused ").strip("()")
            + "), though the same clients complete a handshake with a permissive control server; "
            "TLS 1.2 and 1.3 accepted"
        )


def test_validate_is_never_plain_http_without_insecure(cert_dir: Path) -> None:
    with Record(
        "security",
        "No plain HTTP without --insecure",
        "Runs `serve` without --cert-dir and without --insecure, and with --insecure plus "
        "--client-ca-file; then sends a plain-HTTP review to the TLS port of a running server.",
    ) as rec:
        no_tls = subprocess.run(
            [sys.executable, "-m", "webhook.cli", "serve", "--cluster", str(DEMO_CLUSTER)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        mixed = subprocess.run(
            [
                sys.executable,
                "-m",
                "webhook.cli",
                "serve",
                "--insecure",
                "--client-ca-file",
                str(cert_dir / "ca.crt"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert no_tls.returncode == 2 and "--cert-dir" in no_tls.stderr
        assert mixed.returncode == 2 and "--client-ca-file" in mixed.stderr
        with Serve("--cluster", str(DEMO_CLUSTER), cert_dir=cert_dir) as serve:
            body = str(incident_review()).encode()
            with socket.create_connection((LOOPBACK, serve.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                answer = b""
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(4096):
                        answer += chunk
            assert not answer.startswith(b"HTTP/")
            assert probe(serve) == ""
        rec.note(plain_answer=answer[:40].hex())
        rec.done(
            "serve without TLS material exits 2 (`" + no_tls.stderr.strip().splitlines()[-1][:90] + "`); "
            "--insecure with --client-ca-file exits 2; a plain-HTTP review to the TLS port gets no HTTP "
            f"answer ({len(answer)} bytes back, a TLS alert at most), and TLS clients are served after it"
        )


def test_client_ca_file_requires_a_client_certificate(tmp_path: Path, cert_dir: Path) -> None:
    trusted = CertificateAuthority("apiserver-client-ca")
    other = CertificateAuthority("someone-else")
    (tmp_path / "client-ca.crt").write_bytes(trusted.cert_pem)
    pairs = {}
    for name, ca in (("trusted", trusted), ("other", other)):
        cert, key = ca.issue("kube-apiserver", client=True)
        (tmp_path / f"{name}.crt").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
        pairs[name] = (tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    with Record(
        "security",
        "--client-ca-file (direct clients)",
        "With `--client-ca-file`, sends a review without a client certificate, with one from another "
        "CA, and with one from the configured CA.",
    ) as rec:
        outcome = {}
        with Serve(
            "--cluster",
            str(DEMO_CLUSTER),
            "--client-ca-file",
            str(tmp_path / "client-ca.crt"),
            cert_dir=cert_dir,
            client_cert=pairs["trusted"],
        ) as serve:
            for name, pair in (
                ("none", None),
                ("other CA", pairs["other"]),
                ("trusted CA", pairs["trusted"]),
            ):
                serve.client_cert = pair
                try:
                    response = serve.review(incident_review(f"mtls-{name}"))
                    outcome[name] = f"answered (allowed={response['allowed']})"
                except (OSError, ssl.SSLError) as exc:
                    outcome[name] = f"refused ({type(exc).__name__})"
            serve.client_cert = pairs["trusted"]
        assert outcome["none"].startswith("refused")
        assert outcome["other CA"].startswith("refused")
        assert outcome["trusted CA"] == "answered (allowed=False)"
        rec.note(outcome=outcome)
        rec.done("; ".join(f"{k}: {v}" for k, v in outcome.items()))


# -- strict X.509 (Python 3.13's default client) for every source of serving certificates --------

CHART = REPO_ROOT / "charts" / "crdguard"
SERVICE_HOST = "crdguard.crdguard-system.svc"


def _certs_from_crdguard_certs(out: Path) -> str:
    make_certs(out)
    return LOOPBACK


def _certs_from_make_certs_sh(out: Path) -> str:
    """tls.mode=existingSecret: the Secret that certs/make-certs.sh writes, as the pod mounts it."""
    subprocess.run(
        ["bash", str(REPO_ROOT / "certs" / "make-certs.sh"), "--out", str(out / "made")],
        env={**os.environ, "CRDGUARD": str(Path(sys.executable).parent / "crdguard")},
        check=True,
        capture_output=True,
        timeout=60,
    )
    secret = yaml.safe_load((out / "made" / "secret.yaml").read_text())
    _write_secret(out, secret)
    return SERVICE_HOST


def _certs_from_chart_self_signed(out: Path) -> str:
    """tls.mode=selfSigned: the Secret ``helm template`` renders with Helm's genCA/genSignedCert."""
    _, helm = locate_tools()
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env |= {f"HELM_{kind}_HOME": str(out / "helm" / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
    rendered = subprocess.run(
        [
            *(str(helm), "template", "crdguard", str(CHART), "--namespace", "crdguard-system"),
            *("--set", "image.repository=registry.example/crdguard"),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    (secret,) = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "Secret" and "tls.crt" in d.get("data", {})
    ]
    _write_secret(out, secret)
    return SERVICE_HOST


def _write_secret(out: Path, secret: dict[str, Any]) -> None:
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (out / name).write_bytes(base64.b64decode(secret["data"][name]))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_certs_from_crdguard_certs, id="certificates from crdguard certs pass strict checks"),
        pytest.param(
            _certs_from_make_certs_sh,
            id="the tls.mode=existingSecret Secret from certs/make-certs.sh passes strict checks",
        ),
        pytest.param(
            _certs_from_chart_self_signed,
            id="the chart's tls.mode=selfSigned Secret passes strict checks",
        ),
    ],
)
def test_strict_x509_client_verifies_serve(tmp_path: Path, make: Callable[[Path], str]) -> None:
    """tls.mode=certManager is not here: its certificates come from a cert-manager this suite
    does not run (the chart asks for ECDSA with serverAuth and digitalSignature)."""
    server_name = make(tmp_path)
    strict = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    strict.verify_flags |= ssl.VERIFY_X509_STRICT
    openssl = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", tmp_path / "ca.crt", tmp_path / "tls.crt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    with Serve("--cluster", str(DEMO_CLUSTER), cert_dir=tmp_path, check_hostname=False) as serve:
        with (
            socket.create_connection((LOOPBACK, serve.port), timeout=10) as sock,
            strict.wrap_socket(sock, server_hostname=server_name) as tls,
        ):
            tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = tls.recv(64)
    assert openssl.returncode == 0, openssl.stdout + openssl.stderr
    assert answer.startswith(b"HTTP/1.1 200")
