"""Server TLS with certificates reloaded from disk (a rotated Secret) without a restart.

Each reload builds a complete new SSLContext and only then swaps it in; the
listening context's SNI callback hands the newest one to every new handshake.
Connections already open keep theirs, so a rotation drops nothing, and a
half-written pair is never served.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

log = logging.getLogger("crdguard.tls")


class ReloadingTLS:
    def __init__(self, cert_dir: str, client_ca_file: str | None = None, interval: float = 1.0) -> None:
        self.cert_file = str(Path(cert_dir) / "tls.crt")
        self.key_file = str(Path(cert_dir) / "tls.key")
        self.client_ca_file = client_ca_file
        self.interval = interval
        self._stamp = self._read_stamp()
        self._stop = threading.Event()
        self.current = self._build()
        self.context = self._build()  # the listening context; it only dispatches
        self.context.sni_callback = self._select

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.client_ca_file)
        return context

    def _select(self, connection: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        connection.context = self.current

    def _read_stamp(self) -> tuple[float, float, int, int]:
        # Secret volumes swap a symlink, so follow it: stat() sees the new files.
        crt, key = os.stat(self.cert_file), os.stat(self.key_file)
        return (crt.st_mtime, key.st_mtime, crt.st_ino, key.st_ino)

    def reload_if_changed(self) -> bool:
        try:
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return False
            fresh = self._build()
        except (OSError, ssl.SSLError) as exc:
            # Half-written files during a rotation: keep serving the old pair, retry next tick.
            log.warning("certificate reload postponed: %s", exc)
            return False
        self.current = fresh
        self._stamp = stamp
        log.info("reloaded serving certificate from %s", self.cert_file)
        return True

    def start(self) -> None:
        threading.Thread(target=self._watch, name="crdguard-cert-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.reload_if_changed()
