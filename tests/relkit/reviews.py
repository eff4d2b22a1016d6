"""Reviews with known verdicts against the demo state (kgateway v2.0.4 reading BackendTLSPolicy
v1alpha3; the CRD serves v1alpha3): the incident's CRD update is denied, other changes pass."""

from __future__ import annotations

import copy
import json
from typing import Any

from helpers import REPO_ROOT, admission_review, configmap, deployment, helmrelease

from relkit.load import Case, refusal_error

DEMO_CLUSTER = REPO_ROOT / "examples" / "demo" / "cluster"
DEMO_REVIEW = REPO_ROOT / "examples" / "demo" / "review-backendtlspolicy-v1.json"


def incident_review(uid: str = "incident-0001") -> dict[str, Any]:
    """UPDATE of the BackendTLSPolicy CRD to Gateway API v1.4.0 standard (v1alpha3 unserved)."""
    review: dict[str, Any] = json.loads(DEMO_REVIEW.read_text())
    review["request"]["uid"] = uid
    return review


def allowed_deployment_review(uid: str = "allowed-0001") -> dict[str, Any]:
    """Re-applying the running kgateway v2.0.4 Deployment: nothing new breaks."""
    current = deployment("v2.0.4")
    review = admission_review("UPDATE", current, copy.deepcopy(current), uid=uid)
    return review


def configmap_review(uid: str = "configmap-0001") -> dict[str, Any]:
    return admission_review("CREATE", configmap(), uid=uid)


def helmrelease_review(
    values: dict[str, Any], uid: str = "helmrelease-0001", version: str = "v2.0.4"
) -> dict[str, Any]:
    return admission_review("CREATE", helmrelease(version, values=values), uid=uid)


def demo_cases() -> list[Case]:
    return [
        Case.of("incident CRD update (deny)", incident_review(), False),
        Case.of("kgateway v2.0.4 re-apply (allow)", allowed_deployment_review(), True),
        Case.of("ConfigMap (not judged, allow)", configmap_review(), True),
    ]


def probe(serve: Any) -> str:
    """'' when ``serve`` denies the incident and allows a harmless change, else what went wrong."""
    for review, allowed in (
        (incident_review("probe-deny"), False),
        (allowed_deployment_review("probe-allow"), True),
    ):
        try:
            status, body = serve.post(json.dumps(review).encode(), timeout=30)
        except OSError as exc:
            return f"probe {review['request']['uid']}: {type(exc).__name__}: {exc}"
        if status != 200:
            return f"probe {review['request']['uid']}: HTTP {status}"
        response = json.loads(body)["response"]
        if response["uid"] != review["request"]["uid"] or response["allowed"] is not allowed:
            return f"probe {review['request']['uid']}: wrong answer {body[:300]!r}"
        if not allowed and (refused := refusal_error(response)):
            return f"probe {review['request']['uid']}: {refused}"
    return ""
