"""Security against a real kube-apiserver: client certificates from the API server
(--client-ca-file with an AdmissionConfiguration), least privilege with the chart's ClusterRole,
and no HelmRelease values or Secret content in any log line."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    KGATEWAY_NS,
    REPO_ROOT,
    admission_review,
    deployment,
    gateway_api_bundle,
    helmrelease,
    named,
)
from relkit.kube import (
    apply,
    delete,
    namespace,
    own_control_plane,
    token_kubeconfig,
    wait_until,
    webhook_configuration,
)
from relkit.report import Record
from relkit.reviews import incident_review
from relkit.serve import Serve, free_port, make_certs

from .cluster import CertificateAuthority, ControlPlane

BTP = "backendtlspolicies.gateway.networking.k8s.io"
FAST_SHUTDOWN = "--shutdown-watch-termination-grace-period=2s"
CANARY = "crdguard-canary-7f3a9c1e-do-not-log"
CHART = REPO_ROOT / "charts" / "crdguard"
CHART_NAMESPACE = "crdguard"
# The rules the chart's ClusterRole must hold; used when the chart cannot be rendered.
CHART_RULES = [
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["helm.toolkit.fluxcd.io"],
        "resources": ["helmreleases"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["source.toolkit.fluxcd.io"],
        "resources": ["ocirepositories"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["source.toolkit.fluxcd.io"],
        "resources": ["helmcharts"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["helm.cattle.io"], "resources": ["helmcharts"], "verbs": ["get", "list", "watch"]},
    # The one write: its own webhook configuration, by name (README, "An install that cannot lock").
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["validatingwebhookconfigurations"],
        "resourceNames": ["crdguard"],
        "verbs": ["get", "update"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


@dataclass
class SecurePlane:
    plane: ControlPlane
    webhook_port: int  # the only address the AdmissionConfiguration presents a client certificate to
    client_ca: Path  # CA of that client certificate: crdguard's --client-ca-file
    certs: Path  # crdguard's serving certificate (ca.crt, tls.crt, tls.key)
    admission_args: list[str]


@pytest.fixture(scope="module")
def secure(upstream: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurePlane]:
    work = tmp_path_factory.mktemp("security")
    port = free_port()
    client_ca = CertificateAuthority("apiserver-webhook-client-ca")
    cert, key = client_ca.issue("kube-apiserver-webhook-client", client=True)
    (work / "client-ca.crt").write_bytes(client_ca.cert_pem)
    (work / "client.crt").write_bytes(cert)
    (work / "client.key").write_bytes(key)
    (work / "webhook.kubeconfig").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                # kube-apiserver picks the user whose name is the webhook's host:port.
                "users": [
                    {
                        "name": f"127.0.0.1:{port}",
                        "user": {
                            "client-certificate": str(work / "client.crt"),
                            "client-key": str(work / "client.key"),
                        },
                    }
                ],
            }
        )
    )
    (work / "admission.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "AdmissionConfiguration",
                "plugins": [
                    {
                        "name": "ValidatingAdmissionWebhook",
                        "configuration": {
                            "apiVersion": "apiserver.config.k8s.io/v1",
                            "kind": "WebhookAdmissionConfiguration",
                            "kubeConfigFile": str(work / "webhook.kubeconfig"),
                        },
                    }
                ],
            }
        )
    )
    admission_args = [FAST_SHUTDOWN, f"--admission-control-config-file={work / 'admission.yaml'}"]
    with own_control_plane(admission_args) as plane:
        btp = named(gateway_api_bundle(upstream, "v1.3.0", "experimental"), BTP)
        flux = [
            doc for doc in yaml.safe_load_all((upstream / "flux" / "helmreleases.yaml").read_text()) if doc
        ]
        flux += [
            doc for doc in yaml.safe_load_all((upstream / "flux" / "ocirepositories.yaml").read_text()) if doc
        ]
        apply(plane, btp, *flux, namespace(KGATEWAY_NS), namespace(CHART_NAMESPACE))
        names = [BTP, "helmreleases.helm.toolkit.fluxcd.io", "ocirepositories.source.toolkit.fluxcd.io"]
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
        apply(plane, deployment("v2.0.4"))
        yield SecurePlane(plane, port, work / "client-ca.crt", make_certs(work / "certs"), admission_args)


def _webhook(secure: SecurePlane, name: str) -> dict[str, Any]:
    return webhook_configuration(
        name,
        f"https://127.0.0.1:{secure.webhook_port}/validate",
        (secure.certs / "ca.crt").read_bytes(),
        resources=[
            ("apiextensions.k8s.io", "customresourcedefinitions"),
            ("apps", "deployments"),
            ("helm.toolkit.fluxcd.io", "helmreleases"),
        ],
    )


def _incident_crd(upstream: Path) -> dict[str, Any]:
    return named(gateway_api_bundle(upstream, "v1.4.0", "standard"), BTP)


def test_client_ca_file_with_a_real_apiserver(secure: SecurePlane, upstream: Path) -> None:
    plane = secure.plane
    with Record(
        "security",
        "--client-ca-file with a real kube-apiserver",
        "kube-apiserver runs with --admission-control-config-file: an AdmissionConfiguration whose "
        "WebhookAdmissionConfiguration kubeconfig presents a client certificate to 127.0.0.1:<port>. "
        "crdguard serves there with --client-ca-file. The incident's CRD update must be denied by "
        "crdguard and a harmless Deployment update allowed; then the API server restarts without the "
        "admission configuration and the same calls must be refused at the TLS handshake (failurePolicy "
        "Fail: the client sees an error, crdguard logs no review); a direct client without a certificate "
        "is refused too.",
    ) as rec:
        serve = Serve(
            "--kubeconfig",
            str(plane.kubeconfig),
            "--client-ca-file",
            str(secure.client_ca),
            cert_dir=secure.certs,
            port=secure.webhook_port,
            client_cert=(secure.certs / "tls.crt", secure.certs / "tls.key"),  # replaced below
        )
        serve.client_cert = (secure.client_ca.parent / "client.crt", secure.client_ca.parent / "client.key")
        with serve:
            try:
                apply(plane, _webhook(secure, "crdguard-e2e-mtls"))
                incident = _incident_crd(upstream)
                denied = wait_until(
                    lambda: "crdguard" in (r := apply(plane, incident, check=False)).stderr and r,
                    30,
                    what="crdguard's denial through the API server",
                )
                harmless = deployment("v2.0.4")
                harmless["metadata"]["annotations"] = {"crdguard.io/mtls": "with-certificate"}
                allowed = apply(plane, harmless, check=False)
                reviews_with_cert = _admission_events(serve)

                plane.stop_apiserver()
                plane.start_apiserver([FAST_SHUTDOWN])  # no admission configuration: no client certificate
                harmless["metadata"]["annotations"] = {"crdguard.io/mtls": "without-certificate"}
                refused = wait_until(
                    lambda: (r := apply(plane, harmless, check=False)).returncode != 0 and r,
                    30,
                    what="the call without a client certificate refused",
                )
                reviews_without_cert = _admission_events(serve) - reviews_with_cert
                serve.client_cert = None
                try:
                    serve.review(incident_review("no-client-cert"))
                    direct = "answered"
                except OSError as exc:
                    direct = f"refused ({type(exc).__name__})"
            finally:
                plane.stop_apiserver()
                plane.start_apiserver(secure.admission_args)
                delete(plane, "validatingwebhookconfiguration", "crdguard-e2e-mtls")
        assert denied.returncode != 0 and "denied the request" in denied.stderr
        assert allowed.returncode == 0, allowed.stderr
        assert reviews_with_cert >= 2
        assert "failed calling webhook" in refused.stderr
        assert reviews_without_cert == 0
        assert direct.startswith("refused")
        reason = refused.stderr.split("failed calling webhook", 1)[1].strip()[:160]
        rec.note(reviews_with_cert=reviews_with_cert, refused=reason, direct=direct)
        rec.done(
            f"with the client certificate: the incident CRD update denied by crdguard, the Deployment update "
            f'allowed ({reviews_with_cert} reviews logged); without it: `kubectl apply` fails with "failed '
            f'calling webhook {reason[:110]}…" and crdguard logged 0 reviews; a direct client without a '
            f"certificate: {direct}"
        )


def _admission_events(serve: Serve) -> int:
    return sum('"event":"admission"' in line for line in serve.log_lines())


def _chart_rbac(plane: ControlPlane) -> tuple[list[dict[str, Any]], str]:
    """The ServiceAccount, ClusterRole and ClusterRoleBinding the chart renders."""
    if not (CHART / "templates" / "rbac.yaml").is_file():
        return _inline_rbac(), "inline copy of the chart's rules (chart not found)"
    rendered = plane.helm(
        "template",
        "crdguard",
        str(CHART),
        f"--namespace={CHART_NAMESPACE}",
        "--set=image.repository=registry.example/crdguard",
    )
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    return [d for d in docs if d["kind"] in kinds], "charts/crdguard rendered by helm template"


def _inline_rbac() -> list[dict[str, Any]]:
    meta = {"name": "crdguard"}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**meta, "namespace": CHART_NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta,
            "rules": CHART_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "crdguard"},
            "subjects": [{"kind": "ServiceAccount", "name": "crdguard", "namespace": CHART_NAMESPACE}],
        },
    ]


@pytest.fixture(scope="module")
def chart_token(
    secure: SecurePlane, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[dict[str, Any]], str]:
    """A kubeconfig with a token of the chart's ServiceAccount, bound only to the chart's ClusterRole."""
    plane = secure.plane
    objects, source = _chart_rbac(plane)
    apply(plane, *objects)
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]
    token = plane.kubectl(
        "create",
        "token",
        account["name"],
        f"--namespace={account.get('namespace', CHART_NAMESPACE)}",
        "--duration=1h",
    ).stdout.strip()
    path = token_kubeconfig(tmp_path_factory.mktemp("token") / "crdguard.kubeconfig", plane, token)
    return path, objects, source


def test_least_privilege(secure: SecurePlane, chart_token: tuple[Path, list[dict[str, Any]], str]) -> None:
    plane = secure.plane
    kubeconfig, objects, source = chart_token
    role = next(o for o in objects if o["kind"] == "ClusterRole")
    with Record(
        "security",
        "Least privilege: the chart's ClusterRole",
        "Applies the ServiceAccount, ClusterRole and ClusterRoleBinding of the chart (helm template), "
        "runs `crdguard serve --kubeconfig` with a token of that ServiceAccount, checks it syncs every "
        "type and denies the incident, then tries to read Secrets and other kinds with the same token, "
        "through kubectl and through crdguard's own Kubernetes client.",
    ) as rec:
        with Serve("--kubeconfig", str(kubeconfig)) as serve:
            state = serve.state()
            verdict = serve.review(incident_review("least-privilege"))
            errors = {name: w["errors"] for name, w in state["watches"].items()}
            log = serve.log_text()
        from webhook.state.errors import ClusterForbidden
        from webhook.state.watch import KubeClient, load_api_client

        own_client = KubeClient(load_api_client(str(kubeconfig)))
        attempts: dict[str, str] = {}
        for label, path in (
            ("secrets (all namespaces)", "/api/v1/secrets"),
            ("secrets in crdguard", f"/api/v1/namespaces/{CHART_NAMESPACE}/secrets"),
            ("configmaps", "/api/v1/configmaps"),
            ("pods", "/api/v1/pods"),
        ):
            try:
                own_client.get(path, {"limit": 1}, timeout=10)
                attempts[label] = "read"
            except Exception as exc:
                # The client names a 403 with its own error type; anything else is kept by name.
                forbidden = isinstance(exc, ClusterForbidden)
                attempts[label] = "403" if forbidden else f"{getattr(exc, 'status', type(exc).__name__)}"
        can_i = {
            verb_resource: plane.kubectl(
                "auth",
                "can-i",
                *verb_resource.split(),
                "--all-namespaces",
                kubeconfig=kubeconfig,
                check=False,
            ).stdout.strip()
            for verb_resource in (
                "get secrets",
                "list secrets",
                "watch secrets",
                "create deployments",
                "list deployments",
            )
        }
        assert role["rules"] == CHART_RULES or sorted(
            json.dumps(r, sort_keys=True) for r in role["rules"]
        ) == sorted(json.dumps(r, sort_keys=True) for r in CHART_RULES), role["rules"]
        # Kinds whose CRDs this cluster lacks (Argo CD, k3s, Flux HelmChart) wait for them; the rest sync.
        assert all(w["synced"] or w["waitingForCRD"] for w in state["watches"].values()), state["watches"]
        assert all(
            state["watches"][kind]["synced"]
            for kind in ("customresourcedefinitions", "deployments", "helmreleases", "ocirepositories")
        ), state["watches"]
        assert set(errors.values()) == {0}, errors
        assert "Forbidden" not in log and "403" not in log
        assert verdict["allowed"] is False
        assert attempts["secrets (all namespaces)"] == "403" and attempts["secrets in crdguard"] == "403"
        assert attempts["configmaps"] == "403" and attempts["pods"] == "403"
        assert can_i == {
            "get secrets": "no",
            "list secrets": "no",
            "watch secrets": "no",
            "create deployments": "no",
            "list deployments": "yes",
        }
        rec.note(source=source, synced=sorted(state["watches"]), attempts=attempts, can_i=can_i)
        rec.done(
            f"rules from {source}: get/list/watch on the judged kinds only, get/update of its own webhook "
            f"configuration, create Events; with that token crdguard synced every type whose CRD exists "
            f"({len(state['watches'])} watched) with 0 errors and denied the "
            f"incident; reading Secrets (cluster-wide and in its namespace), ConfigMaps and Pods: HTTP 403 "
            f"each; `kubectl auth can-i` get/list/watch secrets: no, create deployments: no"
        )


def test_logs_never_include_values_or_secrets(
    secure: SecurePlane, chart_token: tuple[Path, list[dict[str, Any]], str], upstream: Path
) -> None:
    plane = secure.plane
    kubeconfig, _, _ = chart_token
    with Record(
        "security",
        "No HelmRelease values or Secret content in logs",
        "Puts a canary string in HelmRelease spec.values (in the cluster, in reviews the API server "
        "sends, allowed and denied, and in direct reviews, also at the one values path crdguard reads), "
        "in a Secret in the cluster and in reviews of Secrets and of malformed objects; crdguard runs "
        "at --log-level debug with the chart's token. Scans every log line, /state, /metrics and every "
        "answer and kubectl message for the canary.",
    ) as rec:
        values = {
            "inferenceExtension": {"enabled": True},
            "controller": {"extraEnv": {"API_TOKEN": CANARY}},
            CANARY: [CANARY, {"nested": CANARY}],
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "canary", "namespace": KGATEWAY_NS, "annotations": {"note": CANARY}},
            "stringData": {"password": CANARY},
        }
        apply(plane, secret, helmrelease("v2.0.4", name="existing", values=values))
        outputs: list[str] = []
        serve = Serve(
            "--kubeconfig",
            str(kubeconfig),
            "--client-ca-file",
            str(secure.client_ca),
            cert_dir=secure.certs,
            port=secure.webhook_port,
            log_level="debug",
        )
        serve.client_cert = (secure.client_ca.parent / "client.crt", secure.client_ca.parent / "client.key")
        with serve:
            try:
                apply(plane, _webhook(secure, "crdguard-e2e-canary"))
                denied = wait_until(
                    lambda: (
                        "crdguard"
                        in (
                            r := apply(
                                plane, helmrelease("v2.1.1", name="denied", values=values), check=False
                            )
                        ).stderr
                        and r
                    ),
                    30,
                    what="the HelmRelease with canary values denied by crdguard",
                )
                allowed = apply(plane, helmrelease("v2.0.4", name="allowed", values=values), check=False)
                outputs += [denied.stdout, denied.stderr, allowed.stdout, allowed.stderr]
                direct = [
                    admission_review("CREATE", helmrelease("v2.1.1", values=values), uid="direct-denied"),
                    admission_review(
                        "CREATE",
                        helmrelease("v2.0.4", values={"inferenceExtension": {"enabled": CANARY}}),
                        uid="direct-read-path",
                    ),
                    admission_review(
                        "UPDATE",
                        helmrelease("v2.1.1", values=values),
                        helmrelease("v2.0.4", values=values),
                        uid="direct-update",
                    ),
                    admission_review("CREATE", secret, uid="direct-secret"),
                    admission_review(
                        "CREATE",
                        {**helmrelease("v2.1.1", values=values), "spec": {"values": values, "chart": CANARY}},
                        uid="direct-malformed",
                    ),
                ]
                for review in direct:
                    _, body = serve.post(json.dumps(review).encode())
                    outputs.append(body.decode(errors="replace"))
                state = serve.state()
                stored = plane.kubectl(
                    "get", "helmreleases,secrets", f"--namespace={KGATEWAY_NS}", "--output=json"
                ).stdout
                outputs += [json.dumps(state), "\n".join(f"{k} {v}" for k, v in serve.metrics().items())]
                outputs.append(serve.metrics_get("/metrics")[1].decode())
            finally:
                delete(plane, "validatingwebhookconfiguration", "crdguard-e2e-canary")
                for name in ("existing", "denied", "allowed"):
                    delete(plane, "helmrelease", name, KGATEWAY_NS)
        lines = serve.log_lines()
        leaked = [
            line for line in lines if CANARY in line or base64.b64encode(CANARY.encode()).decode() in line
        ]
        leaked_outputs = [o[:300] for o in outputs if CANARY in o]
        # The canary really went through crdguard: stored in the cluster, watched, and reviewed.
        assert CANARY in stored and base64.b64encode(CANARY.encode()).decode() in stored
        assert state["objects"].get("HelmRelease", 0) >= 1
        assert denied.returncode != 0 and "denied the request" in denied.stderr
        assert allowed.returncode == 0, allowed.stderr
        assert sum('"event":"admission"' in line for line in lines) >= 4
        assert not leaked, leaked[:3]
        assert not leaked_outputs, leaked_outputs
        rec.note(log_lines=len(lines), outputs=len(outputs), leaked=len(leaked))
        rec.done(
            f"{len(lines)} log lines at debug level (including {sum('event' in line for line in lines)} "
            f"decision records, the denial and the kube client's requests), {len(outputs)} answers, kubectl "
            "messages, /state and /metrics bodies: the canary appears in none of them"
        )
