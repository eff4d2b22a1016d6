"""Network stand-ins on 127.0.0.1: a Service with two endpoints, and a stretch of network
between crdguard and kube-apiserver that a test can cut, stall or close cleanly.

Both run in daemon threads of the test process and stop with :meth:`close`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    sock.listen(512)
    sock.settimeout(0.2)
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST, as a killed process's socket or a dropped route would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Server:
    def __init__(self) -> None:
        self.listener = _listener()
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def start(self) -> _Server:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        with self._lock:
            for sock in list(self._open):
                reset(sock)
            self._open.clear()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            threading.Thread(target=self._guarded, args=(client,), daemon=True).start()

    def _guarded(self, client: socket.socket) -> None:
        with self._lock:
            self._open.add(client)
        try:
            self.handle(client)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def handle(self, client: socket.socket) -> None:
        raise NotImplementedError


class TcpBalancer(_Server):
    """Round-robin TCP forwarding (TLS passes through), skipping backends that refuse.

    What kube-proxy does for a Service with several ready endpoints. ``blackhole``
    accepts connections and never answers (hung pods, a dropped route).
    """

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        super().__init__()
        self.backends = list(backends)
        self.blackhole = False
        self.connections: Counter[int] = Counter()
        self.skipped = 0  # connection attempts to a dead backend, retried on the next
        self._next = 0

    def handle(self, client: socket.socket) -> None:
        if self.blackhole:
            while not self._stop.is_set() and self.blackhole:
                readable, _, _ = select.select([client], [], [], 0.2)
                if readable and not client.recv(65536):
                    return
            return
        backend = None
        for _ in range(len(self.backends)):
            with self._lock:
                host, port = self.backends[self._next % len(self.backends)]
                self._next += 1
            try:
                backend = socket.create_connection((host, port), timeout=2)
                break
            except OSError:
                self.skipped += 1
        if backend is None:
            return  # nothing alive: the client sees the connection closed
        self.connections[port] += 1
        backend.settimeout(None)
        with self._lock:
            self._open.add(backend)
        try:
            _pump(client, backend, self._stop)
        finally:
            with self._lock:
                self._open.discard(backend)
            with contextlib.suppress(OSError):
                backend.close()


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    peers = {a: b, b: a}
    while not stop.is_set():
        readable, _, _ = select.select(list(peers), [], [], 0.5)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                # One side ended: end the other the same way (a reset becomes a close, as with kube-proxy).
                return
            peers[sock].sendall(data)


class _Ended(Exception):
    pass


class _Reader:
    """Buffered reads from a socket with a short timeout, checking ``interrupt`` between reads."""

    def __init__(self, sock: socket.socket, interrupt: Callable[[], None]) -> None:
        self.sock = sock
        self.interrupt = interrupt
        self.buffer = b""
        sock.settimeout(0.2)

    def _fill(self) -> None:
        while True:
            self.interrupt()
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ssl.SSLWantReadError:
                continue
            if not data:
                raise ConnectionError("peer closed")
            self.buffer += data
            return

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


class KubeProxy(_Server):
    """Plain HTTP on 127.0.0.1 in front of kube-apiserver, which it reaches over TLS with a
    client certificate (so the API server still sees crdguard's own identity).

    Every response is sent with ``Connection: close``: one request per connection,
    which lets a test act on the watch streams:

    - ``pause()``: stop passing watch events on (they are dropped: crdguard falls
      behind without noticing, as on a stalled connection); the client side stays open
      even if the API server goes away.
    - ``end_watches()``: end every open watch response cleanly (the last chunk), as the
      API server does when a watch's timeoutSeconds is over; crdguard then watches
      again from the last resourceVersion it saw.
    - ``drop()``: reset every open connection. ``refuse``: reset new ones at once.
    """

    def __init__(self, server_port: int, context: ssl.SSLContext) -> None:
        super().__init__()
        self.server_port = server_port
        self.context = context
        self.paused = False
        self.refuse = False
        self.requests = 0
        self.watch_requests = 0
        self.dropped_events_bytes = 0
        self.history: list[str] = []  # what happened, for failure messages
        self._end_generation = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def pause(self) -> None:
        self.paused = True
        self.history.append("pause")

    def resume(self) -> None:
        self.paused = False

    def end_watches(self) -> None:
        self.history.append("end watches")
        self.paused = False
        self._end_generation += 1

    def drop(self) -> None:
        with self._lock:
            for sock in list(self._open):
                reset(sock)

    def handle(self, client: socket.socket) -> None:
        if self.refuse:
            reset(client)
            return
        generation = self._end_generation

        def interrupt() -> None:
            if self._stop.is_set():
                raise _Ended

        head = _Reader(client, interrupt).until(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0]
        is_watch = b"watch=true" in request_line
        self.requests += 1
        self.watch_requests += is_watch
        self.history.append(f"request {request_line.decode(errors='replace')[:160]}")
        upstream = self.context.wrap_socket(
            socket.create_connection((LOOPBACK, self.server_port), timeout=10), server_hostname=LOOPBACK
        )
        with self._lock:
            self._open.add(upstream)
        try:
            upstream.sendall(_with_connection_close(head))

            def upstream_interrupt() -> None:
                interrupt()
                if is_watch and self._end_generation != generation:
                    raise _Ended

            reader = _Reader(upstream, upstream_interrupt)
            try:
                response_head = reader.until(b"\r\n\r\n")
                client.sendall(_with_connection_close(response_head))
                headers = response_head.lower()
                if b"transfer-encoding: chunked" in headers:
                    self._chunks(reader, client, is_watch, generation)
                else:
                    length = _content_length(headers)
                    if length is not None:
                        client.sendall(reader.exactly(length))
                    else:
                        client.sendall(reader.buffer)
                        reader.buffer = b""
                        with contextlib.suppress(ConnectionError):
                            while True:
                                reader._fill()
                                client.sendall(reader.buffer)
                                reader.buffer = b""
            except _Ended:
                if is_watch:
                    client.sendall(b"0\r\n\r\n")  # a clean end of the watch response
            except (ConnectionError, ssl.SSLError, OSError):
                if is_watch and self.paused:
                    self._hold(client, generation)  # the API server went away while stalled
                else:
                    reset(client)
        finally:
            with self._lock:
                self._open.discard(upstream)
            with contextlib.suppress(OSError):
                upstream.close()

    def _hold(self, client: socket.socket, generation: int) -> None:
        while not self._stop.is_set() and self._end_generation == generation:
            self._stop.wait(0.1)
        client.sendall(b"0\r\n\r\n")

    def _chunks(self, reader: _Reader, client: socket.socket, is_watch: bool, generation: int) -> None:
        while True:
            size_line = reader.until(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            data = reader.exactly(size + 2)
            if size == 0:
                if is_watch and self.paused:
                    self._hold(client, generation)  # the API server ended it while stalled: hold on
                else:
                    client.sendall(size_line + data)
                return
            if is_watch and self.paused:
                self.dropped_events_bytes += size
                self.history.append(f"dropped {size} bytes")
                continue
            if is_watch:
                self.history.append(f"passed {data[:120]!r}")
            client.sendall(size_line + data)


def _with_connection_close(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [
        line for line in lines[1:] if line and not line.lower().startswith((b"connection:", b"keep-alive:"))
    ]
    return b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""])


def _content_length(headers: bytes) -> int | None:
    for line in headers.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return None
