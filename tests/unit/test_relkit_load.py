"""The load and fault checks tell a denial crdguard means from an internal error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from relkit.load import judge_answer

UID = "uid-1"


def answer(allowed: bool, status: dict[str, Any] | None = None) -> bytes:
    response: dict[str, Any] = {"uid": UID, "allowed": allowed}
    if status is not None:
        response["status"] = status
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    ).encode()


DENIAL = {
    "code": 403,
    "reason": "Forbidden",
    "message": "crdguard denied UPDATE of CustomResourceDefinition x",
}
INTERNAL = {
    "code": 500,
    "reason": "InternalError",
    "message": "crdguard internal error; see the crdguard logs",
}


@pytest.mark.parametrize(
    ("body", "expected", "error"),
    [
        pytest.param(answer(False, DENIAL), False, "", id="a 403 crdguard denial is the expected refusal"),
        pytest.param(answer(True), True, "", id="an allowed answer is allowed"),
        pytest.param(
            answer(False, INTERNAL),
            False,
            "internal error (code 500)",
            id="an internal error is never a denial",
        ),
        pytest.param(
            answer(False, {**DENIAL, "message": "no"}),
            False,
            "refusal is not a crdguard denial (code 403)",
            id="a 403 without crdguard's denial message is not a denial",
        ),
        pytest.param(answer(False), False, "refused without a status", id="a refusal without a status fails"),
        pytest.param(
            answer(False, DENIAL), True, "allowed=False but expected True", id="a wrong verdict fails"
        ),
    ],
)
def test_judge_answer(body: bytes, expected: bool, error: str) -> None:
    found, _ = judge_answer(200, body, UID, expected)
    assert found.startswith(error) if error else found == ""
