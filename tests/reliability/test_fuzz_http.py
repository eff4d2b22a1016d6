"""Bad HTTP input against a real ``crdguard serve``: the hand-written corpus, then schemathesis.

After every case the same process must still run, must answer a valid review
correctly (the incident denied, a harmless change allowed), and its memory must
stay bounded. No case may get a 5xx.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relkit.rawhttp import chunked_encoding, chunks, raw_request
from relkit.report import Record
from relkit.reviews import probe
from relkit.serve import Serve

from .corpus import BadInput, corpus

pytestmark = pytest.mark.slow  # real server processes; minutes, not seconds


RSS_BOUND = 512 * 2**20  # a 3.3 MiB body may be held a few times over while decoded, never more


def send(serve: Serve, case: BadInput) -> tuple[int | None, str]:
    headers = dict(case.headers)
    if case.chunked:
        headers["Transfer-Encoding"] = "chunked"
        body = chunked_encoding(case.body)
    else:
        headers["Content-Length"] = str(
            case.declared_length if case.declared_length is not None else len(case.body)
        )
        body = chunks(case.body)
    answer = raw_request(serve.port, "POST", "/validate", headers, body)
    return answer.status, answer.error


def test_hand_written_corpus(demo_http: Serve) -> None:
    with Record(
        "input",
        "Hand-written bad-input corpus",
        "POSTs truncated and invalid JSON, 100,000-deep nesting, the largest string that fits the "
        "body limit and bodies over it (declared, chunked, lying Content-Length), every field of 7 "
        "review kinds replaced by each other JSON type, duplicate keys, NaN/Infinity, invalid UTF-8, "
        "unknown AdmissionReview versions and content types to a real `crdguard serve`; after each "
        "case, a valid review must be answered correctly.",
    ) as rec:
        cases = corpus()
        baseline = demo_http.rss()
        peak = baseline
        statuses: Counter[int | None] = Counter()
        groups: Counter[str] = Counter()
        problems: list[str] = []
        for case in cases:
            status, error = send(demo_http, case)
            statuses[status] += 1
            groups[case.group] += 1
            if status not in case.expect:
                problems.append(
                    f"{case.group}: {case.name}: HTTP {status} ({error}), expected {sorted(case.expect)}"
                )
            if not demo_http.running:
                problems.append(f"{case.group}: {case.name}: the process exited")
                break
            wrong = probe(demo_http)
            if wrong:
                problems.append(f"after {case.group}: {case.name}: {wrong}")
            peak = max(peak, demo_http.rss())
        errored = demo_http.metrics().get(
            'crdguard_admission_reviews_total{decision="errored",rule="none"}', 0.0
        )
        if errored:
            internal = [line for line in demo_http.log_lines() if "internal error" in line]
            problems.append(f"{errored:.0f} reviews answered 'internal error': {internal[:5]}")
        rec.note(cases=len(cases), statuses={str(k): v for k, v in statuses.items()}, groups=dict(groups))
        rec.note(rss_start_mib=round(baseline / 2**20, 1), rss_peak_mib=round(peak / 2**20, 1))
        assert not problems, "\n".join(problems[:40])
        assert not any(s is not None and s >= 500 for s in statuses)
        assert peak < RSS_BOUND
        breakdown = ", ".join(f"{n} {g}" for g, n in groups.items())
        by_status = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items(), key=lambda kv: str(kv[0])))
        rec.done(
            f"{len(cases)} cases ({breakdown}); answers: {by_status}; 0 5xx, 0 crashes; "
            f"{2 * len(cases)} probe reviews after them all correct; "
            f"RSS {baseline / 2**20:.0f} MiB at start, "
            f"peak {peak / 2**20:.0f} MiB (bound {RSS_BOUND // 2**20} MiB)"
        )


SCHEMATHESIS_EXAMPLES = 400  # per operation and generation mode


def test_schemathesis_from_openapi(demo_http: Serve) -> None:
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
    GenerationMode = schemathesis.GenerationMode
    from webhook.admission.app import ServiceConfig, create_app
    from webhook.catalogs import load_catalog
    from webhook.rules.inventory import Inventory
    from webhook.state.files import StaticState

    catalog = load_catalog()
    document = create_app(ServiceConfig(catalog=catalog, state=StaticState(Inventory(catalog), []))).openapi()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    with Record(
        "input",
        "schemathesis from the OpenAPI schema",
        "Generates requests for every operation of `create_app(...).openapi()` (POST /validate, "
        "/healthz, /readyz: all the admission port serves), schema-conforming and schema-violating, "
        "and sends them to a real `crdguard serve`; after each, a valid review must be answered correctly.",
    ) as rec:
        counts: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        problems: list[str] = []
        peak = demo_http.rss()

        def runner(operation: Any, mode: Any) -> Any:
            @given(data=st.data())
            @settings(
                max_examples=SCHEMATHESIS_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            def run(data: Any) -> None:
                nonlocal peak
                case = data.draw(operation.as_strategy(generation_mode=mode))
                response = case.call(base_url=demo_http.base_url, timeout=30)
                label = f"{operation.label} ({mode.value})"
                counts[label] += 1
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    problems.append(f"{label}: HTTP {response.status_code} for {case.body!r:.300}")
                if mode is GenerationMode.POSITIVE and operation.method.upper() == "POST":
                    if response.status_code != 200:
                        problems.append(
                            f"schema-conforming review refused: HTTP {response.status_code} "
                            f"{response.content[:200]!r} for {case.body!r:.300}"
                        )
                wrong = probe(demo_http)
                if wrong or not demo_http.running:
                    problems.append(f"after {label}: {wrong or 'process exited'}")
                peak = max(peak, demo_http.rss())

            return run

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if operation.method.upper() == "GET" and mode is GenerationMode.NEGATIVE:
                    continue  # no parameters to violate
                runner(operation, mode)()
        errored = demo_http.metrics().get(
            'crdguard_admission_reviews_total{decision="errored",rule="none"}', 0.0
        )
        if errored:
            problems.append(f"{errored:.0f} reviews answered 'internal error' so far in this process")
        total = sum(counts.values())
        rec.note(cases=total, per_operation=dict(counts), statuses={str(k): v for k, v in statuses.items()})
        assert not problems, "\n".join(problems[:30])
        assert peak < RSS_BOUND
        by_status = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        rec.done(
            f"{total} generated requests over {len(operations)} operations; answers: {by_status}; "
            f"0 5xx, 0 crashes; every probe review after them correct; peak RSS {peak / 2**20:.0f} MiB"
        )
