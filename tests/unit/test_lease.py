"""The Lease protocol, one round at a time, over an in-memory store that enforces resourceVersion
the way the API server does (a write with a stale resourceVersion is a 409). The real API server
runs it in tests/e2e/test_policy_reports.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from webhook.state.lease import LeaderLease, LeaseRef

REF = LeaseRef("crdguard", "crdguard")


class LeaseStore:
    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.after_get: Any = None  # runs once a GET has been answered: another writer's turn

    def get(self, path: str, query: Any, timeout: float) -> Any:
        assert path == REF.path
        if self.down:
            raise ApiException(status=503, reason="unavailable")
        if self.lease is None:
            raise ApiException(status=404, reason="not found")
        answer = copy.deepcopy(self.lease)
        if self.after_get is not None:
            self.after_get()
        return answer

    def send(self, method: str, path: str, body: Any, timeout: float = 10) -> Any:
        if self.down:
            raise ApiException(status=503, reason="unavailable")
        if method == "POST":
            assert path == REF.collection
            if self.lease is not None:
                raise ApiException(status=409, reason="already exists")
        else:
            assert (method, path) == ("PUT", REF.path)
            assert self.lease is not None
            if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="the object has been modified")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"].get("holderIdentity")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(store: LeaseStore, clock: Clock, identity: str) -> LeaderLease:
    return LeaderLease(store, REF, identity, clock=clock)  # type: ignore[arg-type]


def attempt(lease: LeaderLease) -> bool:
    try:
        return lease.try_acquire_or_renew()
    except ApiException:
        return lease.is_leader


def test_a_free_lease_is_created_and_held() -> None:
    store, clock = LeaseStore(), Clock()
    a = replica(store, clock, "a")
    assert attempt(a) and a.is_leader
    assert store.holder == "a"
    assert store.lease is not None and store.lease["spec"]["leaseDurationSeconds"] == 15


def test_a_renewing_holder_keeps_the_lease_however_long_others_wait() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    attempt(a)
    for _ in range(30):
        clock.now += 2
        assert attempt(a)
        assert not attempt(b)
    assert store.holder == "a" and not b.is_leader


@pytest.mark.parametrize(
    ("waited", "taken"),
    [
        pytest.param(14.0, False, id="a holder silent for less than the lease keeps it"),
        pytest.param(15.0, True, id="a holder silent for the whole lease loses it"),
    ],
)
def test_a_silent_holder_loses_the_lease_by_the_observers_clock(waited: float, taken: bool) -> None:
    store, clock = LeaseStore(), Clock()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    attempt(a)
    assert not attempt(b)  # b starts observing a's record now, whatever renewTime says
    clock.now += waited
    assert attempt(b) is taken
    assert store.holder == ("b" if taken else "a")
    if taken:
        assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1


def test_a_released_lease_is_taken_at_once() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    attempt(a)
    a.stop()
    assert store.holder is None and not a.is_leader
    assert attempt(b) and store.holder == "b"


def test_a_holder_that_cannot_renew_stops_leading_before_anyone_may_take_over() -> None:
    store, clock = LeaseStore(), Clock()
    a = replica(store, clock, "a")
    attempt(a)
    store.down = True
    clock.now += 9.9
    assert not attempt(a) or a.is_leader  # still within the renew deadline
    assert a.is_leader
    clock.now += 0.2  # 10.1 s without a renewal: past the deadline, still before the 15 s lease
    assert not a.is_leader


def test_two_replicas_racing_for_a_free_lease_cannot_both_win() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = replica(store, clock, "a"), replica(store, clock, "b")
    attempt(a)
    a.stop()  # free: no holder
    # b reads the free Lease; a takes it before b writes; b's write carries the old resourceVersion.
    store.after_get = lambda: (setattr(store, "after_get", None), attempt(a))
    assert not attempt(b)
    assert store.holder == "a" and a.is_leader and not b.is_leader


def test_timings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        LeaderLease(LeaseStore(), REF, "a", lease_seconds=10, renew_deadline_seconds=10)  # type: ignore[arg-type]
