"""``crdguard plan``: ordered, verified steps from the cluster's current state to target versions."""

from __future__ import annotations

import argparse

from webhook.catalogs import load_releases
from webhook.cli.audit import read_state
from webhook.cli.common import (
    EXIT_DENIED,
    EXIT_OK,
    UsageError,
    add_cluster_access,
    add_common,
    catalog_of,
    emit,
)
from webhook.rules.plan import Plan, PlanError, Planner, Target


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = sub.add_parser(
        "plan",
        help="print verified steps to reach target versions (exit 1 if no order exists)",
        description="Every step is replayed through crdguard's rules and Gateway API's safe-upgrades policy.",
    )
    add_common(plan)
    add_cluster_access(plan, "plan from")
    plan.add_argument(
        "--to",
        action="append",
        default=[],
        required=True,
        metavar="COMPONENT=VERSION[:CHANNEL]",
        help="a target (repeatable); components: gateway-api, inference-extension, kgateway-crds, kgateway",
    )
    plan.add_argument("--output", choices=["text", "json"], default="text", help="text (default) or json")
    plan.set_defaults(func=run)


def render_text(plan: Plan) -> str:
    lines = [f"note: {note}" for note in plan.notes]
    if not plan.possible:
        lines.append(f"No plan: {plan.reason}")
        return "\n".join(lines)
    if not plan.steps:
        lines.append("Nothing to do: the targets are already installed.")
    for n, step in enumerate(plan.steps, 1):
        where = f" (release {step.release[0]} in {step.release[1]})" if step.release else ""
        lines.append(f"{n}. {step.summary}{where}")
        lines.extend(f"   $ {command}" for command in step.commands)
    if plan.steps:
        lines.append(
            "Every step was checked against crdguard's rules and the safe-upgrades policy in place then."
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    try:
        targets = [Target.parse(text) for text in args.to]
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    inventory, _, _ = read_state(args, catalog)
    try:
        plan = Planner(inventory, catalog, load_releases()).plan(targets)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    emit((plan.dumps() if args.output == "json" else render_text(plan)) + "\n")
    return EXIT_OK if plan.possible else EXIT_DENIED
