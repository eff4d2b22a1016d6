"""A real Kubernetes control plane (etcd + kube-apiserver) for end-to-end tests.

The binaries are the ones ``hack/kube-tools.sh`` builds from the Kubernetes Go
modules; nothing here is mocked. Everything listens on 127.0.0.1 only and
lives in one temporary directory that :meth:`ControlPlane.close` removes.

There is no kube-controller-manager, scheduler or kubelet: no garbage
collection, no default service accounts, Deployments create no Pods. Test pod
templates with a server-side dry-run instead.

Only the standard library, ``cryptography`` and ``pyyaml`` are used, so the
harness does not depend on the code under test.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import ipaddress
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
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# The first address of the service range is the `kubernetes` Service's ClusterIP.
KUBERNETES_SERVICE_IP = "10.0.0.1"
ADMIN_USER = "crdguard-e2e-admin"

_LOG_TAIL_LINES = 80
_POLL_INTERVAL = 0.1


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or to answer."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl or helm call failed; unlike its base class, shows stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n--- stdout ---\n{self.stdout or ''}--- stderr ---\n{self.stderr or ''}"


# --------------------------------------------------------------------------
# Certificates: pure functions returning PEM bytes.
# --------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: accepted everywhere kube-apiserver takes a key, and far quicker
    # to generate than RSA.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)


class CertificateAuthority:
    """A throwaway CA that signs the apiserver's and the clients' certificates."""

    def __init__(self, common_name: str = "crdguard-e2e-ca") -> None:
        self._key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        not_before, not_after = _validity()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self._cert)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[bytes, bytes]:
        """Sign a new leaf certificate; returns ``(cert_pem, key_pem)``.

        For a client certificate Kubernetes reads the user name from the CN
        and the groups from the O attributes.
        """
        key = _new_key()
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        not_before, not_after = _validity()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _cert_pem(builder.sign(self._key, hashes.SHA256())), _key_pem(key)


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux only: kill the child if the test process dies without running its
    # cleanup (SIGKILL, OOM), so no etcd or apiserver is left behind. SIGKILL,
    # because a kube-apiserver whose etcd is gone may hang in graceful shutdown.
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class _Process:
    """One long-running server process whose output goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        if self.running:
            raise ControlPlaneError(f"{self.name} is already running")
        self._log = self.log_path.open("ab")
        self._log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C reaches only pytest, which then stops the
            # apiserver before etcd.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def stop(self, timeout: float = 30.0) -> None:
        if self._popen is not None:
            if self._popen.poll() is None:
                self._popen.terminate()
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._popen.kill()
                    self._popen.wait()
            self._popen = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def failure(self, what: str) -> ControlPlaneError:
        state = "running" if self.running else f"exited with {self.returncode}"
        return ControlPlaneError(
            f"{self.name} {what} ({state}); last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )


# --------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------


class ControlPlane:
    """etcd and kube-apiserver on 127.0.0.1, with an admin kubeconfig.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    ``close`` is also registered with :mod:`atexit`, and on Linux both
    processes are killed if the thread that started them dies, so start the
    control plane from the main thread (pytest fixtures do).

    ``extra_apiserver_args`` are appended to the default flags (a later flag
    wins), e.g. ``["--admission-control-config-file=/path/admission.yaml"]``.
    """

    def __init__(
        self,
        kube_bin_dir: Path | str,
        helm_path: Path | str | None = None,
        *,
        extra_apiserver_args: Sequence[str] = (),
        startup_timeout: float = 90.0,
    ) -> None:
        self.kube_bin_dir = Path(kube_bin_dir)
        self.helm_path = Path(helm_path) if helm_path is not None else None
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.startup_timeout = startup_timeout
        for binary in ("etcd", "kube-apiserver", "kubectl"):
            if not os.access(self.kube_bin_dir / binary, os.X_OK):
                raise ControlPlaneError(f"{self.kube_bin_dir / binary} is missing or not executable")

        self.workdir = Path(tempfile.mkdtemp(prefix="crdguard-e2e-"))
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = free_port()
        self.etcd_url = f"http://{LOOPBACK}:{self.etcd_port}"
        self.server = f"https://{LOOPBACK}:{self.apiserver_port}"

        self.ca = CertificateAuthority()
        self._pki = self.workdir / "pki"
        self.ca_cert_path = self._write(self._pki / "ca.crt", self.ca.cert_pem)
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._admin_cert_path = self._pki / "admin.crt"
        self._admin_key_path = self._pki / "admin.key"

        self._etcd: _Process | None = None
        self._apiserver: _Process | None = None
        self._closed = False
        atexit.register(self.close)

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Write certificates and kubeconfig, start etcd, then the apiserver."""
        try:
            self._write_pki()
            self._start_etcd()
            self.start_apiserver()
        except BaseException:
            self.close()
            raise

    def start_apiserver(
        self,
        extra_apiserver_args: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> None:
        """(Re)start kube-apiserver on the same port, certificates and etcd.

        ``extra_apiserver_args``, when given, replaces the extra flags for this
        and later starts. Returns once ``/readyz`` answers ``ok``.
        """
        if self._apiserver is not None and self._apiserver.running:
            raise ControlPlaneError("kube-apiserver is already running")
        if extra_apiserver_args is not None:
            self.extra_apiserver_args = list(extra_apiserver_args)
        self._apiserver = _Process(
            "kube-apiserver",
            [str(self.kube_bin_dir / "kube-apiserver"), *self._apiserver_args()],
            self.workdir / "kube-apiserver.log",
        )
        self._apiserver.start()
        self.wait_ready(timeout)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver; etcd and its data stay."""
        if self._apiserver is not None:
            self._apiserver.stop()

    def close(self) -> None:
        """Stop both processes and remove the temporary directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.close)

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "etcd.log"

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll ``/readyz`` until it answers ``ok``."""
        apiserver = self._apiserver
        if apiserver is None:
            raise ControlPlaneError("kube-apiserver was never started")
        context = self._admin_ssl_context()
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if not apiserver.running:
                raise apiserver.failure("exited during startup")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=5) as response:
                    body = response.read().decode()
                    if response.status == 200 and body.strip() == "ok":
                        return
                    last_error = f"HTTP {response.status}: {body[:200]}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-500:]}"
            except (OSError, ssl.SSLError) as exc:
                last_error = repr(exc)
            time.sleep(_POLL_INTERVAL)
        raise apiserver.failure(
            f"not ready after {timeout or self.startup_timeout:.0f}s (last /readyz: {last_error})"
        )

    # -- clients -----------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster, as admin by default."""
        config = str(kubeconfig or self.kubeconfig)
        argv = [str(self.kube_bin_dir / "kubectl"), f"--kubeconfig={config}", *args]
        if args[:1] != ("wait",):
            return self._run(argv, input=input, check=check, timeout=timeout)
        # `kubectl wait --for=condition=...` on an object whose status has no conditions yet (a CRD
        # just created) fails at once with "accessor error" instead of waiting: ask again, bounded.
        deadline = time.monotonic() + timeout
        while True:
            done = self._run(argv, input=input, check=False, timeout=timeout)
            if done.returncode == 0 or "accessor error" not in done.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if check and done.returncode != 0:
            raise CommandError(done.returncode, argv, done.stdout, done.stderr)
        return done

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm against this cluster as admin."""
        if self.helm_path is None:
            raise ControlPlaneError("no helm binary was given to ControlPlane")
        argv = [str(self.helm_path), *args]
        return self._run(argv, input=input, check=check, timeout=timeout)

    def make_user_kubeconfig(self, user: str, groups: Iterable[str] = ()) -> Path:
        """A kubeconfig for a client-certificate user that has no RBAC grants."""
        groups = list(groups)
        if "system:masters" in groups:
            raise ValueError("use the admin kubeconfig for system:masters")
        cert, key = self.ca.issue(user, organizations=groups, client=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        path = self.workdir / f"user-{safe}.kubeconfig"
        self._write_kubeconfig(path, user, cert, key)
        return path

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision and return that revision.

        etcd then refuses reads and watches at older revisions, which
        kube-apiserver reports as 410 Gone, but only for requests that reach
        etcd. With the default watch cache a client watch from a compacted
        resourceVersion is still served from memory; start the control plane
        with ``extra_apiserver_args=["--watch-cache=false"]`` to get the 410.
        (A restarted apiserver answers 410 to any resourceVersion older than
        its fresh cache, compacted or not.)
        """
        header = self._etcd_call("/v3/kv/range", {"key": _b64(b"\0")})["header"]
        revision = int(header["revision"])
        self._etcd_call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def etcd_range(self, key: bytes, revision: int = 0) -> dict[str, Any]:
        """One etcd v3 range read via the gRPC gateway (raises when compacted)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if revision:
            body["revision"] = revision
        return self._etcd_call("/v3/kv/range", body)

    # -- internals ---------------------------------------------------------

    def _write(self, path: Path, data: bytes, mode: int = 0o600) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def _write_pki(self) -> None:
        cert, key = self.ca.issue(
            "kube-apiserver",
            dns_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ip_addresses=[LOOPBACK, KUBERNETES_SERVICE_IP],
            server=True,
        )
        self._write(self._pki / "apiserver.crt", cert)
        self._write(self._pki / "apiserver.key", key)

        sa_key = _new_key()
        self._write(self._pki / "sa.key", _key_pem(sa_key))
        self._write(
            self._pki / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

        cert, key = self.ca.issue(ADMIN_USER, organizations=["system:masters"], client=True)
        self._write(self._admin_cert_path, cert)
        self._write(self._admin_key_path, key)
        self._write_kubeconfig(self.kubeconfig, ADMIN_USER, cert, key)

    def _write_kubeconfig(self, path: Path, user: str, cert: bytes, key: bytes) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "crdguard-e2e",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(cert),
                        "client-key-data": _b64(key),
                    },
                }
            ],
            "contexts": [{"name": user, "context": {"cluster": "crdguard-e2e", "user": user}}],
            "current-context": user,
            "preferences": {},
        }
        self._write(path, yaml.safe_dump(config, sort_keys=False).encode())

    def _start_etcd(self) -> None:
        peer = f"http://{LOOPBACK}:{self.etcd_peer_port}"
        self._etcd = _Process(
            "etcd",
            [
                str(self.kube_bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.etcd_log,
        )
        self._etcd.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self._etcd.running:
                raise self._etcd.failure("exited during startup")
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                    if json.load(response).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(_POLL_INTERVAL)
        raise self._etcd.failure("not healthy after 30s")

    def _apiserver_args(self) -> list[str]:
        pki = self._pki
        return [
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_cert_path}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # No controller-manager creates the default service accounts.
            "--disable-admission-plugins=ServiceAccount",
            # The `kubernetes` Endpoints cannot hold a loopback address; without
            # this the apiserver logs a failed reconcile every 10 seconds.
            "--endpoint-reconciler-type=none",
            *self.extra_apiserver_args,
        ]

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert_path))
        context.load_cert_chain(str(self._admin_cert_path), str(self._admin_key_path))
        return context

    def _etcd_call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.etcd_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                result: dict[str, Any] = json.load(response)
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ControlPlaneError(f"etcd {path}: HTTP {exc.code}: {detail}") from None

    def _client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        # Keep kubectl's discovery cache and helm's state out of $HOME.
        env["KUBECACHEDIR"] = str(self.workdir / "kube-cache")
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.workdir / "helm" / kind.lower())
        return env

    def _run(
        self, argv: list[str], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self._client_env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandError(result.returncode, argv, result.stdout, result.stderr)
        return result


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
