"""Slow and many clients against a real TLS ``crdguard serve``: a body trickling in one byte per
second is cut off by --body-timeout while other clients are answered; 1,000 idle connections
do not starve the service."""

from __future__ import annotations

import os
import resource
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from relkit.load import ReviewLoad
from relkit.rawhttp import LOOPBACK
from relkit.report import Record
from relkit.reviews import DEMO_CLUSTER, demo_cases, incident_review
from relkit.serve import Serve

pytestmark = pytest.mark.slow  # real server processes; minutes, not seconds


BODY_TIMEOUT = 3
SLOW_CLIENTS = 20
IDLE_CONNECTIONS = 1000


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def trickle(serve: Serve, body: bytes, outcome: dict[str, object]) -> None:
    """Send the headers, then the body one byte per second; note how and when it ended."""
    started = time.monotonic()
    sock = serve.context().wrap_socket(
        socket.create_connection((LOOPBACK, serve.port)), server_hostname=LOOPBACK
    )
    sock.settimeout(1.0)
    head = (
        f"POST /validate HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode())
    answer = b""
    sent = 0
    try:
        while sent < len(body) and time.monotonic() - started < 60:
            try:
                sock.sendall(body[sent : sent + 1])
                sent += 1
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
            except (TimeoutError, ssl.SSLWantReadError):
                pass
    finally:
        sock.close()
    outcome.update(status=answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else None)
    outcome.update(seconds=time.monotonic() - started, bytes_sent=sent)


def test_one_byte_per_second_body_is_cut_off_without_delaying_others(cert_dir: Path) -> None:
    with Record(
        "clients",
        "Slow body (one byte per second)",
        f"{SLOW_CLIENTS} TLS clients send a review's headers, then its body one byte per second, "
        f"against `serve --body-timeout {BODY_TIMEOUT}`; meanwhile 4 clients send reviews as fast as "
        "they can. Each slow client must get 408; every other review must be answered correctly "
        "while the slow ones are still connected.",
    ) as rec:
        with Serve(
            "--cluster", str(DEMO_CLUSTER), "--body-timeout", str(BODY_TIMEOUT), cert_dir=cert_dir
        ) as serve:
            body = incident_review("slow").__repr__().encode()  # the content never matters: it never arrives
            outcomes: list[dict[str, object]] = [{} for _ in range(SLOW_CLIENTS)]
            slow = [threading.Thread(target=trickle, args=(serve, body, o)) for o in outcomes]
            load = ReviewLoad(serve.connection, demo_cases(), threads=4).start()
            started = time.monotonic()
            for thread in slow:
                thread.start()
            for thread in slow:
                thread.join(90)
            cut_at = time.monotonic()
            results = load.stop()
            during = results.between(started + 0.5, cut_at - 1.0)  # while every slow client was connected
            statuses = {o.get("status") for o in outcomes}
            seconds = sorted(float(o["seconds"]) for o in outcomes)  # type: ignore[arg-type]
            assert statuses == {"408"}, outcomes
            assert min(seconds) >= BODY_TIMEOUT
            assert not results.failures, results.summary()
            assert len(during) > 0
            assert serve.running
            rec.note(
                slow_clients=SLOW_CLIENTS,
                cut_after_s=[round(seconds[0], 2), round(seconds[-1], 2)],
                reviews_while_slow=len(during),
                p99_ms=round(results.latency_ms(0.99), 1),
            )
            rec.done(
                f"all {SLOW_CLIENTS} slow clients got 408 after {seconds[0]:.1f}-{seconds[-1]:.1f} s "
                f"(timeout {BODY_TIMEOUT} s, {int(outcomes[0]['bytes_sent'])} bytes sent each); "  # type: ignore[call-overload]
                f"{len(during)} other reviews answered correctly meanwhile, 0 failed "
                f"(p50 {results.latency_ms(0.5):.1f} ms, p99 {results.latency_ms(0.99):.1f} ms)"
            )


def test_a_thousand_idle_connections_do_not_starve_the_service(cert_dir: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * IDLE_CONNECTIONS + 200  # both ends live in this machine's processes
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"ulimit -n hard limit {hard} < {needed}")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    with Record(
        "clients",
        f"{IDLE_CONNECTIONS:,} idle connections",
        f"Opens {IDLE_CONNECTIONS:,} connections to a TLS `crdguard serve` and leaves them idle (half "
        "stop after the TCP handshake, half after the TLS handshake), then sends reviews; afterwards "
        "closes them and checks the server's descriptors return to where they were. Then 200 "
        "keep-alive connections idle past `--keep-alive 2` must be closed by the server.",
    ) as rec:
        with Serve("--cluster", str(DEMO_CLUSTER), "--keep-alive", "2", cert_dir=cert_dir) as serve:
            fds_before = open_fds(serve.pid)
            idle: list[socket.socket] = []
            try:
                context = serve.context()
                for index in range(IDLE_CONNECTIONS):
                    sock = socket.create_connection((LOOPBACK, serve.port), timeout=10)
                    if index % 2:
                        sock = context.wrap_socket(sock, server_hostname=LOOPBACK)
                    idle.append(sock)
                deadline = time.monotonic() + 20
                while open_fds(serve.pid) < fds_before + IDLE_CONNECTIONS - 5 and time.monotonic() < deadline:
                    time.sleep(0.2)
                fds_held = open_fds(serve.pid)
                results = ReviewLoad(serve.connection, demo_cases(), threads=4, reconnect_every=5).run(5)
                still_open = sum(not _closed_by_peer(sock, wait=0.0) for sock in idle)
                assert not results.failures, results.summary()
                assert len(results.calls) > 0
                assert fds_held >= fds_before + IDLE_CONNECTIONS - 5  # the server really held them
                assert still_open == IDLE_CONNECTIONS  # and starved none of them either
            finally:
                for sock in idle:
                    sock.close()
            deadline = time.monotonic() + 20
            while open_fds(serve.pid) > fds_before + 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            fds_after = open_fds(serve.pid)
            assert fds_after <= fds_before + 5

            # Keep-alive connections left idle are closed by the server (it sends close_notify and FIN).
            kept = []
            for _ in range(200):
                conn = serve.connection()
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                kept.append(conn)
            peak = open_fds(serve.pid)
            time.sleep(4)
            closed_by_server = sum(_closed_by_peer(conn.sock) for conn in kept)
            for conn in kept:
                conn.close()
            deadline = time.monotonic() + 20
            while open_fds(serve.pid) > fds_before + 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            reaped = open_fds(serve.pid)
            assert closed_by_server == len(kept)
            assert reaped <= fds_before + 5
            assert serve.running
            rec.note(
                idle=IDLE_CONNECTIONS,
                server_fds=[fds_before, fds_held, fds_after],
                reviews=len(results.calls),
                p99_ms=round(results.latency_ms(0.99), 1),
                keepalive_closed_by_server=closed_by_server,
                keepalive_fds=[peak, reaped],
            )
            rec.done(
                f"server held {fds_held - fds_before} extra descriptors for the {IDLE_CONNECTIONS:,} "
                f"idle connections and answered {len(results.calls)} reviews on new connections "
                f"meanwhile, 0 failed (p99 {results.latency_ms(0.99):.1f} ms); descriptors back to "
                f"{fds_after} (from {fds_before}) after they closed; {closed_by_server} of 200 idle "
                f"keep-alive connections closed by the server within 4 s ({peak} → {reaped} "
                f"descriptors). ulimit -n here: {soft}/{hard}."
            )


def _closed_by_peer(sock: socket.socket | None, wait: float = 0.5) -> bool:
    if sock is None:
        return True
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except (ssl.SSLZeroReturnError, ConnectionError, ssl.SSLEOFError):
        return True
    except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
        return False
