"""HTTP/1.1 by hand, for requests a well-behaved client library refuses to send."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


@dataclass
class RawAnswer:
    status: int | None  # None: no HTTP answer at all
    body: bytes
    error: str  # how the exchange ended when not cleanly
    sent: int  # body bytes the server took before answering or closing


def raw_request(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body_chunks: Iterable[bytes],
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> RawAnswer:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=LOOPBACK)
    error = ""
    sent = 0
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode("latin-1"))
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError as exc:  # the server answered early and closed: read what it said
                error = f"send stopped: {type(exc).__name__}"
                break
            sent += len(chunk)
        return _read_answer(sock, timeout, error, sent)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def _read_answer(sock: socket.socket, timeout: float, error: str, sent: int) -> RawAnswer:
    data = b""
    deadline = time.monotonic() + timeout
    status: int | None = None
    length: int | None = None
    try:
        while time.monotonic() < deadline:
            if status is None and b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                status = int(lines[0].split()[1])
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                data = rest
            if status is not None and length is not None and len(data) >= length:
                return RawAnswer(status, data[:length], error, sent)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        error = (error + "; " if error else "") + f"read: {type(exc).__name__}"
    return RawAnswer(status, data, error or "closed", sent)


def chunks(body: bytes, size: int = 64 * 1024) -> Iterable[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def chunked_encoding(body: bytes, size: int = 64 * 1024) -> Iterable[bytes]:
    for piece in chunks(body, size):
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"
