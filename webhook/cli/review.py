"""``crdguard review``: answer one AdmissionReview read from stdin, with the service's own judge."""

from __future__ import annotations

import argparse
import sys

from webhook.admission.review import ReviewError, decode, parse_review
from webhook.cli.common import EXIT_OK, UsageError, add_common, catalog_of, emit
from webhook.rules.catalog import Enforcement
from webhook.state.files import StaticState, inventory_from_files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    review = sub.add_parser("review", help="answer one AdmissionReview read from stdin")
    add_common(review)
    review.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from webhook.admission.app import ServiceConfig, judge, respond

    catalog = catalog_of(args)
    state = StaticState(inventory_from_files(args.cluster, catalog), list(args.cluster))
    config = ServiceConfig(catalog=catalog, state=state, enforcement=Enforcement(args.enforcement))
    try:
        request = parse_review(decode(sys.stdin.buffer.read()))
    except ReviewError as exc:
        raise UsageError(f"stdin: {exc}") from None
    emit(respond(request, judge(request, config), config).decode() + "\n")
    return EXIT_OK
