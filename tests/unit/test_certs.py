"""`crdguard certs` and certs/make-certs.sh: the certificates verify as the API server would."""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = REPO_ROOT / "certs" / "make-certs.sh"
CRDGUARD = Path(sys.executable).parent / "crdguard"


def crdguard_certs(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as a user runs it (its logging setup stays out of this process)."""
    return subprocess.run([CRDGUARD, "certs", *args], capture_output=True, text=True, timeout=60)


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return dns, ips


def public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def handshake(ca_pem: bytes, cert_file: Path, key_file: Path, server_name: str) -> None:
    """A TLS handshake in memory, the client verifying the server as the API server does, and with
    strict X.509 checks (Python 3.13's default), which need the key identifiers and KeyUsage."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize(
    ("hosts", "dns", "ips"),
    [
        pytest.param(
            "crdguard.crdguard-system.svc,127.0.0.1",
            ["crdguard.crdguard-system.svc"],
            ["127.0.0.1"],
            id="a service name and an IPv4 address become a DNS SAN and an IP SAN",
        ),
        pytest.param(
            "a.ns.svc, a.ns.svc.cluster.local",
            ["a.ns.svc", "a.ns.svc.cluster.local"],
            [],
            id="several DNS names become SANs with the spaces trimmed",
        ),
        pytest.param("::1,localhost", ["localhost"], ["::1"], id="an IPv6 address becomes an IP SAN"),
    ],
)
def test_certs_writes_a_leaf_with_the_requested_sans(
    tmp_path: Path, hosts: str, dns: list[str], ips: list[str]
) -> None:
    assert crdguard_certs("--out", str(tmp_path), "--hosts", hosts).returncode == 0
    leaf = load_cert((tmp_path / "tls.crt").read_bytes())
    assert sans(leaf) == (dns, [str(ipaddress.ip_address(ip)) for ip in ips])


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, str]:
    result = crdguard_certs("--out", str(tmp_path), "--hosts", "svc.ns.svc,127.0.0.1", "--days", "30")
    assert result.returncode == 0, result.stderr
    return tmp_path, result.stdout.strip()


def test_the_ca_signs_the_leaf(bundle: tuple[Path, str]) -> None:
    out, _ = bundle
    ca = load_cert((out / "ca.crt").read_bytes())
    leaf = load_cert((out / "tls.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_openssl_verifies_the_leaf_with_strict_x509_checks(bundle: tuple[Path, str]) -> None:
    out, _ = bundle
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            out / "ca.crt",
            out / "tls.crt",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"{out / 'tls.crt'}: OK"), result.stderr


@pytest.mark.parametrize(
    ("name", "extension", "expected"),
    [
        pytest.param(
            "ca.crt",
            x509.KeyUsage,
            {"key_cert_sign": True, "crl_sign": True, "digital_signature": False},
            id="the CA may sign certificates and CRLs, nothing else",
        ),
        pytest.param(
            "tls.crt",
            x509.KeyUsage,
            {"digital_signature": True, "key_cert_sign": False, "key_encipherment": False},
            id="the ECDSA leaf may only sign (no keyEncipherment for an EC key)",
        ),
        pytest.param(
            "ca.crt", x509.BasicConstraints, {"ca": True, "path_length": 0}, id="the CA is a CA of depth 0"
        ),
    ],
)
def test_key_usage_and_constraints(
    bundle: tuple[Path, str], name: str, extension: type[Any], expected: dict[str, object]
) -> None:
    found = load_cert((bundle[0] / name).read_bytes()).extensions.get_extension_for_class(extension)
    assert found.critical is True
    assert {attr: getattr(found.value, attr) for attr in expected} == expected


def test_the_leaf_names_its_issuer_by_the_cas_key_identifier(bundle: tuple[Path, str]) -> None:
    ca = load_cert((bundle[0] / "ca.crt").read_bytes())
    leaf = load_cert((bundle[0] / "tls.crt").read_bytes())
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf_ski = leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf_aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert leaf_aki.key_identifier == ca_ski.digest
    assert leaf_ski.digest == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest
    assert leaf_ski.digest != ca_ski.digest


def test_a_foreign_ca_does_not_verify_the_leaf(
    bundle: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other")
    assert crdguard_certs("--out", str(other), "--hosts", "svc.ns.svc").returncode == 0
    leaf = load_cert((bundle[0] / "tls.crt").read_bytes())
    with pytest.raises(InvalidSignature):
        leaf.verify_directly_issued_by(load_cert((other / "ca.crt").read_bytes()))


def test_the_key_matches_the_leaf_and_is_private(bundle: tuple[Path, str]) -> None:
    out, _ = bundle
    key = serialization.load_pem_private_key((out / "tls.key").read_bytes(), password=None)
    leaf = load_cert((out / "tls.crt").read_bytes())
    assert public_der(key.public_key()) == public_der(leaf.public_key())
    assert (out / "tls.key").stat().st_mode & 0o777 == 0o600


def test_stdout_is_the_base64_ca_bundle(bundle: tuple[Path, str]) -> None:
    out, printed = bundle
    assert base64.b64decode(printed) == (out / "ca.crt").read_bytes()


def test_validity_follows_days(bundle: tuple[Path, str]) -> None:
    leaf = load_cert((bundle[0] / "tls.crt").read_bytes())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days in (29, 30)


@pytest.mark.parametrize(
    ("server_name", "verifies"),
    [
        pytest.param("svc.ns.svc", True, id="a client asking for the service name verifies the server"),
        pytest.param("127.0.0.1", True, id="a client asking for the IP SAN verifies the server"),
        pytest.param("other.ns.svc", False, id="a client asking for another name rejects the server"),
    ],
)
def test_tls_handshake(bundle: tuple[Path, str], server_name: str, verifies: bool) -> None:
    out, _ = bundle
    ca_pem = (out / "ca.crt").read_bytes()
    if verifies:
        handshake(ca_pem, out / "tls.crt", out / "tls.key", server_name)
    else:
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(ca_pem, out / "tls.crt", out / "tls.key", server_name)


def test_certs_without_hosts_is_a_usage_error(tmp_path: Path) -> None:
    result = crdguard_certs("--out", str(tmp_path), "--hosts", " , ")
    assert result.returncode == 2
    assert "--hosts needs at least one" in result.stderr


# -- certs/make-certs.sh -------------------------------------------------------------------


def run_make_certs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(MAKE_CERTS), *args],
        env={**os.environ, "CRDGUARD": str(CRDGUARD), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("how", "service", "namespace"),
    [
        pytest.param("flags", "guard", "policy", id="flags name the service and namespace"),
        pytest.param("env", "crdguard", "crdguard-system", id="environment variables name them"),
    ],
)
def test_make_certs_writes_a_tls_secret_for_the_service(
    tmp_path: Path, how: str, service: str, namespace: str
) -> None:
    out = tmp_path / "out"
    if how == "flags":
        result = run_make_certs("--service", service, "--namespace", namespace, "--out", str(out))
    else:
        result = run_make_certs(
            env={"CRDGUARD_SERVICE": service, "CRDGUARD_NAMESPACE": namespace, "CRDGUARD_CERTS_OUT": str(out)}
        )
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load((out / "secret.yaml").read_text())
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "kubernetes.io/tls")
    assert secret["metadata"] == {"name": f"{service}-tls", "namespace": namespace}
    data = {k: base64.b64decode(v, validate=True) for k, v in secret["data"].items()}
    assert sorted(data) == ["ca.crt", "tls.crt", "tls.key"]
    leaf, ca = load_cert(data["tls.crt"]), load_cert(data["ca.crt"])
    leaf.verify_directly_issued_by(ca)
    host = f"{service}.{namespace}.svc"
    assert sans(leaf) == ([host, f"{host}.cluster.local"], [])
    key = serialization.load_pem_private_key(data["tls.key"], password=None)
    assert public_der(key.public_key()) == public_der(leaf.public_key())
    assert base64.b64decode((out / "caBundle").read_text().strip()) == data["ca.crt"]
    assert (out / "secret.yaml").stat().st_mode & 0o077 == 0


def test_make_certs_prints_the_helm_flags_for_existing_secret(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_make_certs("--service", "guard", "--namespace", "policy", "--out", str(out))
    assert result.returncode == 0, result.stderr
    flags = next(line.strip() for line in result.stdout.splitlines() if "tls.mode=" in line)
    assert flags == (
        "--namespace policy --set fullnameOverride=guard --set tls.mode=existingSecret "
        f"--set tls.existingSecret=guard-tls --set-file tls.caBundle={out}/caBundle"
    )


def test_make_certs_adds_extra_hosts_for_running_outside_the_cluster(tmp_path: Path) -> None:
    result = run_make_certs("--out", str(tmp_path), "--extra-hosts", "127.0.0.1,localhost")
    assert result.returncode == 0, result.stderr
    dns, ips = sans(load_cert((tmp_path / "tls.crt").read_bytes()))
    assert dns == ["crdguard.crdguard-system.svc", "crdguard.crdguard-system.svc.cluster.local", "localhost"]
    assert ips == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--service", "Bad_Name"], "is not a DNS label", id="a service name with capitals is refused"
        ),
        pytest.param(["--days", "0"], "is not a positive number", id="zero days is refused"),
        pytest.param(["--colour", "blue"], "unknown argument '--colour'", id="an unknown flag is refused"),
    ],
)
def test_make_certs_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_make_certs("--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_make_certs_says_when_crdguard_is_missing(tmp_path: Path) -> None:
    result = run_make_certs("--out", str(tmp_path), env={"CRDGUARD": str(tmp_path / "no-such-crdguard")})
    assert result.returncode == 2
    assert "not found; install crdguard or set CRDGUARD" in result.stderr
