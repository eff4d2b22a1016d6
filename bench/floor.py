"""The floor: crdguard's server stack with no rules, to show what the transport alone costs.

Same FastAPI and uvicorn, same settings as ``crdguard serve`` (uvloop, httptools,
no access log, same keep-alive, the same reloading TLS context over the same
certificates). ``POST /validate`` reads the body, takes ``request.uid`` and
answers a constant allowed AdmissionReview that echoes it. Two ways to take the uid:

* ``--decode uid`` (the floor): msgspec decodes only ``request.uid``; the
  cheapest decode available, so the floor does strictly less than crdguard;
* ``--decode json-loads`` (a second reference, "floor-json-loads"): the whole
  review through ``json.loads``, what a naive Python webhook pays before judging.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import msgspec
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from webhook.admission.tls import ReloadingTLS


class _Request(msgspec.Struct):
    uid: str


class _Review(msgspec.Struct):
    request: _Request


_uid_only = msgspec.json.Decoder(_Review)


def uid_by_msgspec(body: bytes) -> str:
    return _uid_only.decode(body).request.uid


def uid_by_json_loads(body: bytes) -> str:
    return str(json.loads(body)["request"]["uid"])


DECODERS: dict[str, Callable[[bytes], str]] = {"uid": uid_by_msgspec, "json-loads": uid_by_json_loads}


def create_app(take_uid: Callable[[bytes], str] = uid_by_msgspec) -> FastAPI:
    app = FastAPI(title="crdguard-bench-floor")
    head = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":'

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        uid = take_uid(await request.body())
        return Response(head + json.dumps(uid).encode() + b',"allowed":true}}', media_type="application/json")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="The benchmark's floor server")
    parser.add_argument("--cert-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8444)
    parser.add_argument("--keep-alive", type=int, default=75)
    parser.add_argument("--decode", choices=sorted(DECODERS), default="uid", help="how the uid is taken")
    args = parser.parse_args()
    tls = ReloadingTLS(args.cert_dir)
    tls.start()
    config = uvicorn.Config(
        create_app(DECODERS[args.decode]),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_keep_alive=args.keep_alive,
        ssl_context_factory=lambda _config, _default: tls.context,
    )
    uvicorn.Server(config).run()
    tls.stop()


if __name__ == "__main__":
    main()
