"""``crdguard serve`` with the proposals applied by monkeypatching, to measure them end to end.

    python -m bench.proposals.serve_patched [--no-allowed-log] -- serve --cluster ... --cert-dir ...

``--partial-decode``: webhook.admission.app decodes with bench.proposals.partial_decode.decode.
``--no-allowed-log``: decisions that allow without any conflict are not logged (denials,
warnings and audits still are). Nothing in webhook/ is changed on disk.
"""

from __future__ import annotations

import sys

from webhook import cli
from webhook.admission import app


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    flags, rest = set(argv[:split]), argv[split + 1 :]
    if "--partial-decode" in flags:
        from bench.proposals.partial_decode import decode

        app.decode = decode  # type: ignore[assignment]
    if "--no-allowed-log" in flags:
        original = app._log_decision

        def log_unless_plain_allow(request, verdict, seconds):  # type: ignore[no-untyped-def]
            if verdict.decision != "allowed":
                original(request, verdict, seconds)

        app._log_decision = log_unless_plain_allow  # type: ignore[assignment]
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
