"""Words for people: the denial a developer reads in ``kubectl apply`` output, and short warnings."""

from __future__ import annotations

from collections.abc import Sequence

from webhook.rules.detect import ComponentRelease
from webhook.rules.engine import Conflict, Verdict
from webhook.rules.objects import CRD_KIND
from webhook.rules.plan import Fix

WARNING_LIMIT = 119  # the API server shows warnings whole below 120 characters


def verify_command(crd: str) -> str:
    # Shows the served flag of each version; `{.spec.versions[*].name}` lists unserved ones too.
    return (
        f"kubectl get crd {crd} -o jsonpath="
        "'{range .spec.versions[*]}{.name}={.served}{\" \"}{end}'"
    )


def _crd_state(conflict: Conflict) -> str:
    crd = conflict.crd
    if crd is None:
        return f"{conflict.rule.crd} is not installed"
    bundle = f" [{crd.bundle}]" if crd.bundle else ""
    return f"{conflict.rule.crd}{bundle} serves {crd.describe_served()}"


def _need(conflict: Conflict) -> str:
    rule = conflict.rule
    if rule.needed_version is None:
        return f"the CRD {rule.crd} to be installed"
    group = rule.crd.split(".", 1)[1]
    if rule.listed_version is not None:
        return f"{rule.crd_kind} {group}/{rule.listed_version} to be served if the CRD lists it"
    return f"{rule.crd_kind} {group}/{rule.served_version} to be served"


def describe_conflict(conflict: Conflict, index: int, after_change: bool = True) -> str:
    rule, release = conflict.rule, conflict.release
    when = "After this change, " if after_change else "Now, "
    lines = [
        f"[{index}] {release.component} {release.version_text} in {release.source} "
        f"({release.detail}) needs {_need(conflict)}.",
        f"    {when}{_crd_state(conflict)}.",
        f"    Why: {rule.explanation}",
        f"    Verify: {verify_command(rule.crd)}",
    ]
    if rule.evidence:
        lines.append(
            f"    Rule {rule.id} ({rule.source}); evidence: " + "; ".join(str(e) for e in rule.evidence)
        )
    return "\n".join(lines)


def describe_fixes(fixes: Sequence[Fix]) -> list[str]:
    """The fix paths, each verified step by step against crdguard's rules and the safe-upgrades policy."""
    if not fixes:
        return ["No verified fix: no order of known releases gets out of this conflict (see crdguard plan)."]
    lines = ["Fix, one of (each path replayed step by step through crdguard and the safe-upgrades policy):"]
    for letter, fix in zip("abcdefgh", fixes, strict=False):
        lines.append(f"  {letter}) {fix.summary}")
        for n, step in enumerate(fix.steps, 1):
            lines.append(f"     {n}. {step.summary}")
            lines.extend(f"        $ {command}" for command in step.commands)
        if fix.retry:
            lines.append(f"     {len(fix.steps) + 1}. Retry this change")
    return lines


def denial_message(verdict: Verdict, fixes: Sequence[Fix] | None = None) -> str:
    change = verdict.change
    assert change is not None
    what = "deletion" if change.operation == "DELETE" else change.operation
    target = f"CustomResourceDefinition {change.ref.name}" if change.kind == CRD_KIND else str(change.ref)
    count = len(verdict.denied)
    plural = "conflict" if count == 1 else "conflicts"
    head = (
        f"crdguard denied {what} of {target}: it would introduce {count} CRD {plural} "
        f"with an installed controller."
    )
    body = [describe_conflict(c, i) for i, c in enumerate(verdict.denied, 1)]
    tail = describe_fixes(fixes) if fixes is not None else []
    return "\n".join([head, *body, *tail])


def _short(text: str) -> str:
    return text if len(text) <= WARNING_LIMIT else text[: WARNING_LIMIT - 3] + "..."


def conflict_warning(prefix: str, conflict: Conflict) -> str:
    release, rule = conflict.release, conflict.rule
    source = release.source
    where = f"{source.namespace}/{source.name}" if source.namespace else source.name
    need = f"{rule.crd_kind} {rule.needed_version}" if rule.needed_version else rule.crd
    return _short(f"crdguard: {prefix}: {release.component} {release.version_text} ({where}) needs {need}")


def unchecked_warning(release: ComponentRelease) -> str:
    source = release.source
    where = f"{source.namespace}/{source.name}" if source.namespace else source.name
    # The verdict goes first: a digest or long names would otherwise push it past the cut.
    return _short(
        f"crdguard: not checked, version not exact: {release.component} {release.version_text!r} "
        f"in {source.kind} {where}"
    )


def warnings(verdict: Verdict) -> list[str]:
    found = [conflict_warning("new conflict (warn)", c) for c in verdict.warned]
    found += [conflict_warning("existing conflict", c) for c in verdict.existing]
    found += [unchecked_warning(r) for r in verdict.unchecked]
    return found


def audit_annotations(verdict: Verdict) -> dict[str, str]:
    annotations: dict[str, str] = {}
    if verdict.audited:
        annotations["conflicts"] = "; ".join(
            f"{c.rule.id}: {c.release.component} {c.release.version_text} in {c.release.source}"
            for c in verdict.audited
        )
    if verdict.existing:
        annotations["existing-conflicts"] = ",".join(sorted({c.rule.id for c in verdict.existing}))
    return annotations
