"""Bounded review load from client threads: every answer checked, every failure kept."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relkit.serve import peer_serial

UID = "@@UID@@"


@dataclass(frozen=True)
class Case:
    """One review body (its uid a placeholder) and the verdict it must get (None: any)."""

    name: str
    body: bytes
    allowed: bool | None

    @classmethod
    def of(cls, name: str, review: Mapping[str, Any], allowed: bool | None) -> Case:
        document = json.loads(json.dumps(review))
        document["request"]["uid"] = UID
        return cls(name, json.dumps(document).encode(), allowed)


@dataclass
class Call:
    case: str
    started: float
    ended: float
    error: str = ""  # empty: answered 200 with the right uid and verdict
    allowed: bool | None = None  # the verdict received
    decision: object = None  # what ``ReviewLoad(decide=...)`` made of the response, if given


@dataclass
class Results:
    calls: list[Call] = field(default_factory=list)
    serials: list[tuple[float, int]] = field(default_factory=list)  # (time, peer certificate serial)
    connections: int = 0

    @property
    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.error]

    def between(self, start: float, end: float) -> list[Call]:
        return [c for c in self.calls if start <= c.started < end]

    def latency_ms(self, quantile: float) -> float:
        values = sorted((c.ended - c.started) * 1000 for c in self.calls if not c.error)
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[min(98, int(quantile * 100) - 1)]

    def summary(self) -> str:
        failures = self.failures
        head = f"{len(self.calls)} reviews, {len(failures)} failed"
        if failures:
            head += f" (first: {failures[0].case}: {failures[0].error})"
        return head


DENIAL_PREFIX = "crdguard denied "


def refusal_error(response: Mapping[str, Any]) -> str:
    """'' when a refusal is a denial crdguard means (403, its denial message), else what it is:
    an internal error (500) answers ``allowed: false`` too, and must never pass for a denial."""
    status = response.get("status")
    if not isinstance(status, dict):
        return f"refused without a status: {response!r:.200}"
    code, message = status.get("code"), str(status.get("message", ""))
    if code == 500:
        return f"internal error (code 500): {message[:150]}"
    if code != 403 or not message.startswith(DENIAL_PREFIX):
        return f"refusal is not a crdguard denial (code {code!r}): {message[:150]!r}"
    return ""


def judge_answer(status: int, body: bytes, uid: str, allowed: bool | None) -> tuple[str, bool | None]:
    """('' or what is wrong, the verdict received). A refusal counts as ``allowed=False`` only
    when it is a denial (403, "crdguard denied ..."); anything else is an error."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}", None
    try:
        response = json.loads(body)["response"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable answer ({exc}): {body[:200]!r}", None
    got = response.get("allowed")
    if response.get("uid") != uid:
        return f"uid {response.get('uid')!r} != {uid!r}", got
    if not isinstance(got, bool):
        return f"allowed is {got!r}", None
    if got is False and (refused := refusal_error(response)):
        return refused, None
    if allowed is not None and got is not allowed:
        return f"allowed={got} but expected {allowed}", got
    return "", got


def check_answer(status: int, body: bytes, uid: str, allowed: bool | None) -> str:
    return judge_answer(status, body, uid, allowed)[0]


class ReviewLoad:
    """``threads`` clients sending ``cases`` in turn until stopped (or ``limit`` seconds pass).

    ``reconnect_every``: open a new connection after that many requests (0: keep one
    connection per thread, reopened only after an error). ``pause``: seconds between
    requests of one thread, to bound the rate.
    """

    def __init__(
        self,
        connect: Callable[[], http.client.HTTPConnection],
        cases: Sequence[Case],
        *,
        threads: int = 4,
        reconnect_every: int = 0,
        pause: float = 0.0,
        limit: float = 900.0,
        decide: Callable[[Mapping[str, Any]], object] | None = None,
    ) -> None:
        self.connect = connect
        self.decide = decide
        self.cases = list(cases)
        self.threads = threads
        self.reconnect_every = reconnect_every
        self.pause = pause
        self.limit = limit
        self.results = Results()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> ReviewLoad:
        self._deadline = time.monotonic() + self.limit
        for index in range(self.threads):
            worker = threading.Thread(target=self._work, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> Results:
        """Ask every client to stop after its current request, and wait for them."""
        self._stop.set()
        for worker in self._workers:
            worker.join(120)
        return self.results

    def set_cases(self, cases: Sequence[Case]) -> None:
        self.cases = list(cases)

    def run(self, seconds: float) -> Results:
        self.start()
        self._stop.wait(seconds)
        return self.stop()

    def _open(self) -> http.client.HTTPConnection:
        conn = self.connect()
        conn.connect()
        with self._lock:
            self.results.connections += 1
            if hasattr(conn.sock, "getpeercert"):
                self.results.serials.append((time.monotonic(), peer_serial(conn.sock)))
        return conn

    def _work(self, index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        sent_on_conn = 0
        i = index
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            cases = self.cases
            case = cases[i % len(cases)]
            i += 1
            uid = str(uuid.uuid4())
            started = time.monotonic()
            error = ""
            got: bool | None = None
            decision: object = None
            try:
                if conn is None or (self.reconnect_every and sent_on_conn >= self.reconnect_every):
                    if conn is not None:
                        conn.close()
                    conn, sent_on_conn = self._open(), 0
                conn.request(
                    "POST",
                    "/validate",
                    body=case.body.replace(UID.encode(), uid.encode(), 1),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                body = response.read()
                error, got = judge_answer(response.status, body, uid, case.allowed)
                if self.decide is not None and not error:
                    decision = self.decide(json.loads(body)["response"])
                sent_on_conn += 1
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error and conn is not None:
                conn.close()
                conn = None
            with self._lock:
                self.results.calls.append(Call(case.name, started, time.monotonic(), error, got, decision))
            if self.pause:
                self._stop.wait(self.pause)
        if conn is not None:
            conn.close()
