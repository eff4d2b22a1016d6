"""Certificates rotated on disk under load, and SIGTERM under load, against a real ``crdguard serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from e2e.cluster import CertificateAuthority
from relkit.load import ReviewLoad, check_answer
from relkit.rawhttp import LOOPBACK, _read_answer
from relkit.report import Record
from relkit.reviews import DEMO_CLUSTER, demo_cases, incident_review
from relkit.serve import Serve

pytestmark = pytest.mark.slow  # real server processes; minutes, not seconds


ROTATION_SECONDS = 30
RELOAD_GRACE = 3.0  # crdguard looks at the files every second
TERMINATION_GRACE_PERIOD = 30  # charts/crdguard/values.yaml terminationGracePeriodSeconds


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume: ``tls.crt`` -> ``..data/tls.crt``,
    ``..data`` -> ``..<timestamp>``; an update swaps ``..data`` atomically."""

    def __init__(self, root: Path, ca: CertificateAuthority) -> None:
        self.root = root
        self.ca = ca
        self.generation = 0
        root.mkdir(parents=True)
        (root / "ca.crt").write_bytes(ca.cert_pem)
        self.swap()
        for name in ("tls.crt", "tls.key"):
            (root / name).symlink_to(Path("..data") / name)

    def issue(self) -> tuple[bytes, bytes]:
        return self.ca.issue("crdguard", ip_addresses=[LOOPBACK], dns_names=["localhost"], server=True)

    def swap(self) -> None:
        """The kubelet's atomic update: write a new timestamped dir, then rename a symlink over ..data."""
        self.generation += 1
        cert, key = self.issue()
        fresh = self.root / f"..2026_{self.generation:04d}"
        fresh.mkdir()
        (fresh / "tls.crt").write_bytes(cert)
        (fresh / "tls.key").write_bytes(key)
        (fresh / "tls.key").chmod(0o600)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(fresh.name)
        os.replace(tmp, self.root / "..data")

    def rewrite_in_place(self, pause: float) -> None:
        """A careless update: each file truncated and rewritten in two halves, the key last."""
        cert, key = self.issue()
        for name, data in (("tls.crt", cert), ("tls.key", key)):
            if name == "tls.key":
                time.sleep(pause)  # a new certificate beside the old key
            with (self.root / name).open("wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(pause)
                handle.write(data[len(data) // 2 :])


def _serial(pem_path: Path) -> int:
    from cryptography import x509

    return int(x509.load_pem_x509_certificate(pem_path.read_bytes()).serial_number)


def test_certificate_rotation_under_load(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "tls", CertificateAuthority("crdguard-webhook-ca"))
    with Record(
        "certs",
        "Certificate rotation under load",
        f"{ROTATION_SECONDS} s of reviews from 4 clients (2 on keep-alive connections, 2 opening a new "
        "TLS connection per review) while tls.crt/tls.key change twice: an atomic Secret-volume "
        "update (..data symlink swap), then a careless in-place rewrite of each file in two halves. "
        "Counts failed reviews and reads the serial of the certificate each new connection sees.",
    ) as rec:
        with Serve("--cluster", str(DEMO_CLUSTER), cert_dir=volume.root) as serve:
            serials = [_serial(volume.root / "tls.crt")]
            keepalive = ReviewLoad(serve.connection, demo_cases(), threads=2).start()
            fresh = ReviewLoad(serve.connection, demo_cases(), threads=2, reconnect_every=1).start()
            started = time.monotonic()
            time.sleep(ROTATION_SECONDS / 3)
            rotated = [time.monotonic()]
            volume.swap()
            serials.append(_serial(volume.root / "tls.crt"))
            time.sleep(ROTATION_SECONDS / 3)
            rewrite_started = time.monotonic()
            volume.rewrite_in_place(pause=1.5)
            rotated.append(time.monotonic())  # the pair is consistent again from here
            serials.append(_serial(volume.root / "tls.crt"))
            time.sleep(max(0.0, started + ROTATION_SECONDS - time.monotonic()))
            results = [keepalive.stop(), fresh.stop()]
            log = serve.log_text()
        calls = sum(len(r.calls) for r in results)
        failures = [f for r in results for f in r.failures]
        seen = sorted(results[1].serials)
        # After each change (plus the reload interval) and until the next one starts, every new
        # connection must see the newest certificate; during the in-place rewrite either is fine.
        windows = [
            (rotated[0] + RELOAD_GRACE, rewrite_started, serials[1]),
            (rotated[1] + RELOAD_GRACE, float("inf"), serials[2]),
        ]
        late = [
            (round(t - start, 2), s)
            for start, end, want in windows
            for t, s in seen
            if start <= t < end and s != want
        ]
        switch = []
        for i in range(2):
            first_new = next((t for t, s in seen if s == serials[i + 1]), None)
            switch.append(None if first_new is None else round(first_new - rotated[i], 2))
        assert not failures, f"{len(failures)} failed: {failures[:5]}"
        assert {s for _, s in seen} == set(serials), "every certificate generation was served"
        assert not late, f"new connections still saw an old certificate: {late[:5]}"
        assert log.count("reloaded serving certificate") == 2
        rec.note(
            reviews=calls,
            connections=len(seen),
            switch_after_s=switch,
            postponed=log.count("reload postponed"),
        )
        rec.done(
            f"{calls} reviews, 0 failed; {len(seen)} new TLS connections saw the 3 serials in order; the "
            f"new certificate was served {switch[0]} s after the atomic swap and {switch[1]} s after the "
            f"in-place rewrite finished (crdguard checks every 1 s); half-written files were skipped "
            f"{log.count('reload postponed')} time(s) and the old pair kept serving meanwhile"
        )


def _slow_upload(
    serve: Serve, uid: str, sigterm: threading.Event, ready: threading.Barrier, out: dict[str, str]
) -> None:
    """Send half a review, wait for SIGTERM, send the rest over two seconds, read the answer."""
    body = json.dumps(incident_review(uid)).encode()
    sock = serve.context().wrap_socket(
        socket.create_connection((LOOPBACK, serve.port), timeout=60), server_hostname=LOOPBACK
    )
    try:
        sock.sendall(
            f"POST /validate HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        ready.wait(30)
        sigterm.wait(60)
        rest = body[len(body) // 2 :]
        for i in range(4):
            time.sleep(0.5)
            sock.sendall(rest[i * len(rest) // 4 : (i + 1) * len(rest) // 4])
        answer = _read_answer(sock, 60, "", len(body))
        out[uid] = (
            check_answer(answer.status or 0, answer.body, uid, False)
            if answer.status
            else f"no answer ({answer.error})"
        )
    except OSError as exc:
        out[uid] = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()


def _stuck_upload(serve: Serve, out: dict[str, str]) -> None:
    """Half a body, then nothing: the server must not wait for it forever."""
    sock = serve.context().wrap_socket(
        socket.create_connection((LOOPBACK, serve.port), timeout=60), server_hostname=LOOPBACK
    )
    try:
        sock.sendall(
            f"POST /validate HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        answer = _read_answer(sock, 60, "", 1)
        out["stuck"] = f"HTTP {answer.status}" if answer.status else f"closed ({answer.error})"
    except OSError as exc:
        out["stuck"] = f"{type(exc).__name__}"
    finally:
        sock.close()


def test_sigterm_during_load_finishes_in_flight_reviews(tmp_path: Path) -> None:
    from relkit.serve import make_certs

    cert_dir = make_certs(tmp_path / "certs")
    slow_clients = 8
    with Record(
        "certs",
        "SIGTERM during load",
        "4 clients send reviews on keep-alive connections, 8 more are half-way through sending a "
        "review's body and one has stopped sending mid-body, when crdguard (defaults: "
        "--graceful-shutdown 20, --body-timeout 10) gets SIGTERM. As a Service does once the pod is "
        "terminating, no new review is started after the signal. Every review started before it must "
        "be answered correctly, and the process must exit within the chart's "
        f"terminationGracePeriodSeconds ({TERMINATION_GRACE_PERIOD} s).",
    ) as rec:
        serve = Serve("--cluster", str(DEMO_CLUSTER), cert_dir=cert_dir).start()
        try:
            load = ReviewLoad(serve.connection, demo_cases(), threads=4).start()
            sigterm = threading.Event()
            ready = threading.Barrier(slow_clients + 1)
            out: dict[str, str] = {}
            slow = [
                threading.Thread(target=_slow_upload, args=(serve, f"slow-{i}", sigterm, ready, out))
                for i in range(slow_clients)
            ]
            stuck = threading.Thread(target=_stuck_upload, args=(serve, out))
            for thread in [*slow, stuck]:
                thread.start()
            ready.wait(30)
            time.sleep(3)  # load running, uploads half-way
            stopping = threading.Thread(target=load.stop)
            stopping.start()  # no new reviews from here on
            signalled = time.monotonic()
            serve.signal(signal.SIGTERM)
            sigterm.set()
            code = serve.wait(TERMINATION_GRACE_PERIOD + 5)
            exited = time.monotonic() - signalled
            stopping.join(60)
            for thread in [*slow, stuck]:
                thread.join(60)
            results = load.results
        finally:
            serve.stop()
        log = serve.log_text()
        in_flight = [c for c in results.calls if c.started < signalled <= c.ended]
        slow_answers = {k: v for k, v in out.items() if k != "stuck"}
        assert not results.failures, results.summary()
        assert slow_answers == {f"slow-{i}": "" for i in range(slow_clients)}, slow_answers
        # uvicorn re-raises the SIGTERM it caught once the graceful shutdown is over: status 143 in a
        # container, as for most servers; the log shows the shutdown ran to its end.
        assert code in (0, -signal.SIGTERM)
        assert "Finished server process" in log
        assert exited < TERMINATION_GRACE_PERIOD
        rec.note(
            reviews=len(results.calls),
            fast_in_flight=len(in_flight),
            slow_in_flight=slow_clients,
            stuck=out.get("stuck"),
            exit_code=code,
            exit_s=round(exited, 2),
        )
        rec.done(
            f"{len(results.calls)} reviews before the signal, 0 failed ({len(in_flight)} of them still "
            "in flight "
            f"at SIGTERM); all {slow_clients} half-sent reviews finished after the signal and were answered "
            f"correctly; the stuck upload got {out.get('stuck')} at its body timeout; the process "
            "finished its "
            f"graceful shutdown and exited {exited:.1f} s after SIGTERM (bound {TERMINATION_GRACE_PERIOD} s; "
            f"status {'0' if code == 0 else '143 = re-raised SIGTERM'})"
        )
