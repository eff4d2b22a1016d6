"""The floor: crdguard's server stack with no rules, to show what the transport alone costs.

Same FastAPI and uvicorn, same settings as ``crdguard serve`` (uvloop, httptools,
no access log, same keep-alive, the same reloading TLS context over the same
certificates). ``POST /validate`` reads the body, parses the JSON and answers a
constant allowed AdmissionReview that echoes the uid.
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from webhook.admission.tls import ReloadingTLS


def create_app() -> FastAPI:
    app = FastAPI(title="crdguard-bench-floor")

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        review = json.loads(await request.body())
        answer = {
            "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": True},
        }
        return Response(json.dumps(answer, separators=(",", ":")).encode(), media_type="application/json")

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
    args = parser.parse_args()
    tls = ReloadingTLS(args.cert_dir)
    tls.start()
    config = uvicorn.Config(
        create_app(),
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
