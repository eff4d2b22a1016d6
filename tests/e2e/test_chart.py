"""The Helm chart: lint, render, schema, and installs into a real kube-apiserver.

The API server validates every installed object, compiles the CEL matchConditions, and then
evaluates them: a release registered with ``webhook.url`` on a closed 127.0.0.1 port and
failurePolicy Fail rejects exactly the requests its webhooks send, which shows, on the real
server, which objects each matchCondition and namespaceSelector lets through. There is no
kubelet, so no pod runs; pod templates are checked by a server-side dry run under the
restricted Pod Security level.

Releases that use the in-cluster Service are removed before any request that their webhooks
would send is made: the API server would otherwise dial the Service's ClusterIP.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from bundles import BundleUnavailable, argocd_application_crd

from webhook.catalogs import default_catalog_text, load_catalog
from webhook.certs import make_certificates

from .cluster import ControlPlane, free_port
from .conftest import REPO_ROOT, locate_tools, unavailable

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "crdguard"
MAKE_CERTS = REPO_ROOT / "certs" / "make-certs.sh"
KUBE_VERSION = "v1.35.4"
RELEASE = "crdguard"
NAMESPACE = "crdguard-system"
FULLNAME = "crdguard"  # the release name already contains the chart name
SERVICE_HOST = f"{FULLNAME}.{NAMESPACE}.svc"
CATALOG = load_catalog()
DEFAULT_CRDS = sorted(CATALOG.crd_names)
# The list literals the chart's CEL holds for the whole default catalog (values.yaml mirrors it).
CHARTS = json.dumps(
    sorted({c for x in CATALOG.components.values() for c in x.detect.charts}), separators=(",", ":")
)
IMAGE_PATHS = sorted({i for x in CATALOG.components.values() for i in x.detect.images})
WEBHOOKS = (
    "crds.crdguard.io",
    "deployments.crdguard.io",
    "flux.crdguard.io",
    "argocd.crdguard.io",
    "k3s.crdguard.io",
)
KGATEWAY_IMAGE = "registry.example/kgateway-dev/kgateway"
CRDGUARD = Path(sys.executable).parent / "crdguard"
IMAGE_REPOSITORY = "registry.example/crdguard"
# The chart has no default image (values.yaml says why): every install and rendering names one.
IMAGE = ["--set", f"image.repository={IMAGE_REPOSITORY}"]
# Placeholders in helm arguments for files the `helm` fixture writes.
CA_BUNDLE_FILE = "{ca_bundle_file}"
EXTRA_CATALOG_FILE = "{extra_catalog_file}"

# A second component and a rule about a test-only CRD, passed as catalog.extra: the chart must
# add both to its matchConditions without any other value.
EXTRA_CATALOG = """\
apiVersion: crdguard.io/v1alpha1
kind: CompatibilityCatalog
components:
  - name: site-gateway
    detect:
      images: [sitecorp/site-gateway]
      labels: {app.kubernetes.io/name: site-gateway}
      charts: [site-gateway-helm]
rules:
  - id: site-gateway-needs-gadgets
    component: site-gateway
    versions: ">=1.0.0"
    crd: gadgets.crdguard-e2e.example.com
    crdKind: Gadget
    requires: {exists: true}
    whenCRDMissing: conflict
    failure: crash
    explanation: A test-only rule; the gadgets CRD stands for a CRD a site catalog guards.
"""
GADGETS_CRD = "gadgets.crdguard-e2e.example.com"
WIDGETS_CRD = "widgets.crdguard-e2e.example.com"

# tls.mode settings; CA_BUNDLE_FILE becomes a file holding a base64 CA.
MODES: dict[str, list[str]] = {
    "selfSigned": [],
    "certManager": ["--set", "tls.mode=certManager"],
    "existingSecret": [
        "--set",
        "tls.mode=existingSecret",
        "--set",
        "tls.existingSecret=crdguard-serving",
        "--set-file",
        f"tls.caBundle={CA_BUNDLE_FILE}",
    ],
    "url": [
        "--set",
        "webhook.url=https://127.0.0.1:9443/validate",
        "--set",
        "tls.mode=existingSecret",
        "--set-file",
        f"tls.caBundle={CA_BUNDLE_FILE}",
    ],
}
MODE_IDS = {
    "selfSigned": "tls.mode=selfSigned",
    "certManager": "tls.mode=certManager",
    "existingSecret": "tls.mode=existingSecret",
    "url": "webhook.url with tls.mode=existingSecret",
}
mode_params = pytest.mark.parametrize("mode", list(MODES), ids=list(MODE_IDS.values()))

Doc = dict[str, Any]


# -- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path
    ca_bundle_file: Path
    extra_catalog_file: Path

    def resolve(self, args: list[str] | tuple[str, ...]) -> list[str]:
        files = {CA_BUNDLE_FILE: self.ca_bundle_file, EXTRA_CATALOG_FILE: self.extra_catalog_file}
        resolved = []
        for arg in args:
            for placeholder, path in files.items():
                arg = arg.replace(placeholder, str(path))
            resolved.append(arg)
        return resolved

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Offline: no kubeconfig, so nothing here can reach a cluster by accident.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env |= {f"HELM_{kind}_HOME": str(self.home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
        argv = [str(self.binary), *self.resolve(args)]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} failed:\n{result.stderr}")
        return result

    def template(self, *args: str) -> list[Doc]:
        out = self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            *IMAGE,
            *args,
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def ca_pem() -> bytes:
    return make_certificates([SERVICE_HOST, f"{SERVICE_HOST}.cluster.local", "127.0.0.1"]).ca_crt


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory, ca_pem: bytes) -> Helm:
    _, binary = locate_tools()
    home = tmp_path_factory.mktemp("helm")
    ca_bundle_file = home / "caBundle"
    ca_bundle_file.write_text(base64.b64encode(ca_pem).decode() + "\n")
    extra_catalog_file = home / "50-site.yaml"
    extra_catalog_file.write_text(EXTRA_CATALOG)
    return Helm(binary, home, ca_bundle_file, extra_catalog_file)


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def registered_config(docs: list[Doc], fullname: str = FULLNAME) -> Doc:
    """The configuration crdguard registers (--register-webhook): the chart's ConfigMap file."""
    config: Doc = yaml.safe_load(one(docs, "ConfigMap", f"{fullname}-webhook")["data"]["webhook.yaml"])
    return config


def webhooks(docs: list[Doc], fullname: str = FULLNAME) -> dict[str, Doc]:
    return {w["name"]: w for w in registered_config(docs, fullname)["webhooks"]}


def pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: list[Doc]) -> Doc:
    (only,) = pod_spec(docs)["containers"]
    return dict(only)


def dig(doc: Any, path: str) -> Any:
    for key in path.split("."):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


@pytest.fixture(scope="module")
def default_docs(helm: Helm) -> list[Doc]:
    return helm.template()


# -- lint and render, per TLS mode ----------------------------------------------------------


@mode_params
def test_lint_strict_passes(helm: Helm, mode: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *IMAGE, *MODES[mode])
    assert "0 chart(s) failed" in result.stdout


IN_CLUSTER_KINDS = [
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Deployment",
    "Pod",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "Service",
    "ServiceAccount",
    "ValidatingWebhookConfiguration",
]
EXPECTED_KINDS = {
    "selfSigned": sorted([*IN_CLUSTER_KINDS, "Secret"]),
    "certManager": sorted([*IN_CLUSTER_KINDS, "Certificate", "Certificate", "Issuer", "Issuer"]),
    "existingSecret": IN_CLUSTER_KINDS,
    "url": [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ],
}


@mode_params
def test_renders_the_objects_of_the_mode(helm: Helm, mode: str) -> None:
    docs = helm.template(*MODES[mode])
    assert sorted(d["kind"] for d in docs) == EXPECTED_KINDS[mode]


@mode_params
def test_webhooks_reach_crdguard_with_the_right_ca(helm: Helm, mode: str, ca_pem: bytes) -> None:
    docs = helm.template(*MODES[mode])
    config = registered_config(docs)
    annotations = one(docs, "ValidatingWebhookConfiguration")["metadata"].get("annotations", {})
    expected_service = {"name": FULLNAME, "namespace": NAMESPACE, "path": "/validate", "port": 443}
    for webhook in config["webhooks"]:
        client = webhook["clientConfig"]
        if mode == "url":
            assert client == {
                "url": "https://127.0.0.1:9443/validate",
                "caBundle": base64.b64encode(ca_pem).decode(),
            }
        elif mode == "certManager":
            assert client == {"service": expected_service}
        else:
            assert client["service"] == expected_service
    bundle = config["webhooks"][0]["clientConfig"].get("caBundle")
    if mode == "selfSigned":
        secret = one(docs, "Secret")
        assert (secret["type"], secret["metadata"]["name"]) == ("kubernetes.io/tls", f"{FULLNAME}-tls")
        assert bundle == secret["data"]["ca.crt"]
        assert b"BEGIN CERTIFICATE" in base64.b64decode(bundle)
    elif mode == "existingSecret":
        assert bundle == base64.b64encode(ca_pem).decode()
    if mode == "certManager":
        assert annotations == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-serving"}
        serving = one(docs, "Certificate", f"{FULLNAME}-serving")
        assert serving["spec"]["dnsNames"] == [SERVICE_HOST, f"{SERVICE_HOST}.cluster.local"]
        assert serving["spec"]["issuerRef"] == {"kind": "Issuer", "name": f"{FULLNAME}-ca"}
        assert one(docs, "Certificate", f"{FULLNAME}-ca")["spec"]["isCA"] is True
    else:
        assert "cert-manager.io/inject-ca-from" not in annotations
    if mode != "url":
        secret_name = {"existingSecret": "crdguard-serving"}.get(mode, f"{FULLNAME}-tls")
        volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
        assert volumes["certs"]["secret"]["secretName"] == secret_name
        if mode == "certManager":
            assert serving["spec"]["secretName"] == secret_name


@pytest.mark.parametrize(
    ("mode", "ca_source"),
    [
        pytest.param("selfSigned", "secret", id="the helm test pod trusts the generated Secret's CA"),
        pytest.param("certManager", "secret", id="the helm test pod trusts cert-manager's CA"),
        pytest.param("existingSecret", "value", id="the helm test pod trusts tls.caBundle"),
    ],
)
def test_helm_test_pod_checks_readyz_over_verified_tls(
    helm: Helm, mode: str, ca_source: str, ca_pem: bytes
) -> None:
    pod = one(helm.template(*MODES[mode]), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (test_container,) = pod["spec"]["containers"]
    script = test_container["command"][2]
    assert test_container["command"][:2] == ["python", "-c"]
    assert "ssl.create_default_context(cadata=" in script
    assert "urlopen(url, context=context" in script
    env = {e["name"]: e for e in test_container["env"]}
    assert env["READYZ_URL"]["value"] == f"https://{SERVICE_HOST}:443/readyz"
    if ca_source == "value":
        assert env["CA_PEM"]["value"] == ca_pem.decode()
    else:
        assert env["CA_PEM"]["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-tls", "key": "ca.crt"}


# -- the default rendering, field by field --------------------------------------------------

EXPECTED_RULES = {
    "crds.crdguard.io": [
        (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("CREATE", "UPDATE", "DELETE"), "Cluster")
    ],
    "deployments.crdguard.io": [(("apps",), ("deployments",), ("CREATE", "UPDATE"), "Namespaced")],
    "flux.crdguard.io": [
        (("helm.toolkit.fluxcd.io",), ("helmreleases",), ("CREATE", "UPDATE"), "Namespaced"),
        (
            ("source.toolkit.fluxcd.io",),
            ("ocirepositories", "helmcharts"),
            ("CREATE", "UPDATE"),
            "Namespaced",
        ),
    ],
    "argocd.crdguard.io": [(("argoproj.io",), ("applications",), ("CREATE", "UPDATE"), "Namespaced")],
    "k3s.crdguard.io": [(("helm.cattle.io",), ("helmcharts",), ("CREATE", "UPDATE"), "Namespaced")],
}


def test_each_webhook_sends_exactly_its_kinds_and_operations(default_docs: list[Doc]) -> None:
    rules = {
        name: [
            (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["operations"]), r["scope"])
            for r in webhook["rules"]
        ]
        for name, webhook in webhooks(default_docs).items()
    }
    assert rules == EXPECTED_RULES


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("failurePolicy", "Fail", id="failurePolicy defaults to Fail"),
        pytest.param("sideEffects", "None", id="sideEffects is None so dry runs are reviewed"),
        pytest.param("admissionReviewVersions", ["v1"], id="only AdmissionReview v1 is spoken"),
        pytest.param("matchPolicy", "Equivalent", id="matchPolicy is Equivalent"),
        pytest.param("timeoutSeconds", 5, id="timeoutSeconds defaults to 5"),
    ],
)
def test_every_webhook_setting(default_docs: list[Doc], field: str, expected: object) -> None:
    assert {name: w[field] for name, w in webhooks(default_docs).items()} == dict.fromkeys(WEBHOOKS, expected)


def test_crd_webhook_sends_only_the_catalogs_crds_by_request_name(default_docs: list[Doc]) -> None:
    crds = webhooks(default_docs)["crds.crdguard.io"]
    assert "namespaceSelector" not in crds, "namespaceSelector never applies to cluster-scoped CRDs"
    (condition,) = crds["matchConditions"]
    assert condition["expression"] == f"request.name in {json.dumps(DEFAULT_CRDS, separators=(',', ':'))}"


@pytest.mark.parametrize(
    ("name", "skipped"),
    [
        *((name, [NAMESPACE, "kube-system"]) for name in WEBHOOKS[1:4]),
        # k3s and RKE2 keep their HelmCharts in kube-system.
        ("k3s.crdguard.io", [NAMESPACE]),
    ],
    ids=[
        *(f"{name} skips the release namespace and kube-system" for name in WEBHOOKS[1:4]),
        "k3s.crdguard.io skips only the release namespace",
    ],
)
def test_namespaced_webhooks_skip_the_release_namespace(
    default_docs: list[Doc], name: str, skipped: list[str]
) -> None:
    assert webhooks(default_docs)[name]["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": skipped}]
    }


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        pytest.param(
            "deployments.crdguard.io",
            [
                "has(object.spec.template.spec.containers)",
                "object.spec.template.spec.containers.exists(c, has(c.image) && ("
                + json.dumps(IMAGE_PATHS, separators=(",", ":"))
                + '.exists(p, ("/" + c.image).contains("/" + p + ":")',
                # library/traefik also matches the image written traefik:<tag>, on the whole name.
                '["traefik"].exists(n, ["", "docker.io/", "index.docker.io/"].exists(r, c.image == r + n',
                '("/" + c.image).contains("/" + p + "@")',
                '("/" + c.image).endsWith("/" + p)',
                'has(object.metadata.labels) && ("app.kubernetes.io/name" in object.metadata.labels',
            ],
            id="Deployments are matched by image path or label, guarded by has()",
        ),
        pytest.param(
            "flux.crdguard.io",
            [
                f"object.spec.chart.spec.chart in {CHARTS}",
                "has(object.spec.chartRef)",
                'object.spec.url.endsWith("/" + n)',
                'object.spec.chart == n || object.spec.chart.endsWith("/" + n)',
            ],
            id="HelmReleases, OCIRepositories and HelmCharts are matched by chart name",
        ),
        pytest.param(
            "argocd.crdguard.io",
            [
                f"[object.spec.source].exists(s, (has(s.chart) && s.chart in {CHARTS})",
                "object.spec.sources.exists(s, ",
                f'has(s.repoURL) && {CHARTS}.exists(n, s.repoURL.endsWith("/" + n))',
            ],
            id="Applications are matched by a source's chart or OCI repoURL",
        ),
        pytest.param(
            "k3s.crdguard.io",
            [f"has(object.spec.chart) && {CHARTS}.exists(n, object.spec.chart == n"],
            id="k3s HelmCharts are matched by chart name or oci:// URL",
        ),
    ],
)
def test_component_match_conditions(default_docs: list[Doc], name: str, fragments: list[str]) -> None:
    (condition,) = webhooks(default_docs)[name]["matchConditions"]
    for fragment in fragments:
        assert fragment in condition["expression"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("securityContext.runAsNonRoot", True, id="the pod runs as non-root"),
        pytest.param("securityContext.runAsUser", 65532, id="the pod runs as uid 65532"),
        pytest.param("securityContext.runAsGroup", 65532, id="the pod runs as gid 65532"),
        pytest.param("securityContext.seccompProfile.type", "RuntimeDefault", id="the pod uses seccomp"),
        pytest.param("containers.0.securityContext.runAsNonRoot", True, id="the container runs as non-root"),
        pytest.param("containers.0.securityContext.runAsUser", 65532, id="the container runs as uid 65532"),
        pytest.param("containers.0.securityContext.runAsGroup", 65532, id="the container runs as gid 65532"),
        pytest.param(
            "containers.0.securityContext.allowPrivilegeEscalation", False, id="no privilege escalation"
        ),
        pytest.param(
            "containers.0.securityContext.capabilities.drop", ["ALL"], id="all capabilities dropped"
        ),
        pytest.param(
            "containers.0.securityContext.readOnlyRootFilesystem", True, id="the root filesystem is read-only"
        ),
        pytest.param(
            "containers.0.securityContext.seccompProfile.type",
            "RuntimeDefault",
            id="the container uses seccomp",
        ),
        pytest.param("terminationGracePeriodSeconds", 30, id="terminationGracePeriodSeconds defaults to 30"),
        pytest.param("containers.0.readinessProbe.httpGet.path", "/readyz", id="readiness probes /readyz"),
        pytest.param("containers.0.readinessProbe.httpGet.scheme", "HTTPS", id="readiness probes over HTTPS"),
        pytest.param("containers.0.livenessProbe.httpGet.path", "/healthz", id="liveness probes /healthz"),
        pytest.param("containers.0.livenessProbe.httpGet.scheme", "HTTPS", id="liveness probes over HTTPS"),
        pytest.param(
            "containers.0.image",
            f"{IMAGE_REPOSITORY}:0.1.0",
            id="the image tag defaults to appVersion",
        ),
        pytest.param(
            "containers.0.resources",
            {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            id="resources are set",
        ),
        pytest.param(
            "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution.0.podAffinityTerm",
            {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "crdguard",
                        "app.kubernetes.io/instance": RELEASE,
                    }
                },
            },
            id="replicas prefer different nodes",
        ),
    ],
)
def test_pod_spec_field(default_docs: list[Doc], path: str, expected: object) -> None:
    assert dig(pod_spec(default_docs), path) == expected


def test_server_arguments(default_docs: list[Doc]) -> None:
    crdguard = container(default_docs)
    assert crdguard["command"] == ["crdguard", "--log-level=info", "serve"]
    assert crdguard["args"] == [
        "--in-cluster",
        "--cert-dir=/certs",
        "--host=0.0.0.0",
        "--port=8443",
        "--metrics-host=0.0.0.0",
        "--metrics-port=8080",
        "--enforcement=deny",
        "--graceful-shutdown=20",
        "--register-webhook=/etc/crdguard/webhook/webhook.yaml",
        f"--peers-service={NAMESPACE}/{FULLNAME}",
    ]


def test_the_arguments_parse_with_crdguards_own_parser(default_docs: list[Doc]) -> None:
    from webhook.cli import build_parser

    crdguard = container(default_docs)
    args = build_parser().parse_args([*crdguard["command"][1:], *crdguard["args"]])
    assert (args.command, args.in_cluster, args.cert_dir, args.port, args.log_level) == (
        "serve",
        True,
        "/certs",
        8443,
        "info",
    )
    assert (args.metrics_host, args.metrics_port, args.enable_state_endpoint) == ("0.0.0.0", 8080, False)
    pre_stop = container(default_docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert args.graceful_shutdown + pre_stop < pod_spec(default_docs)["terminationGracePeriodSeconds"]


@pytest.mark.parametrize(
    ("kind", "path", "expected"),
    [
        pytest.param("Deployment", "spec.replicas", 2, id="two replicas by default"),
        pytest.param("PodDisruptionBudget", "spec.minAvailable", 1, id="the PDB keeps one pod available"),
        pytest.param(
            "Service",
            "spec.ports",
            [
                {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
                {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"},
            ],
            id="the Service listens on 443 for reviews and on 8080 for metrics",
        ),
        pytest.param(
            "Deployment",
            "spec.template.spec.containers.0.ports",
            [
                {"name": "https", "containerPort": 8443, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
            ],
            id="the container serves 8443 as https and 8080 as metrics",
        ),
        pytest.param(
            "Deployment",
            "spec.template.spec.containers.0.readinessProbe.httpGet",
            {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
            id="the readiness probe asks the admission port, which serves /readyz",
        ),
        pytest.param(
            "ClusterRoleBinding",
            "subjects",
            [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}],
            id="the ClusterRole is bound to the release's ServiceAccount",
        ),
    ],
)
def test_object_field(default_docs: list[Doc], kind: str, path: str, expected: object) -> None:
    assert dig(one(default_docs, kind), path) == expected


def test_cluster_role_reads_the_judged_kinds_and_writes_only_its_own_webhooks(
    default_docs: list[Doc],
) -> None:
    rules = one(default_docs, "ClusterRole")["rules"]
    assert sorted(
        (r["apiGroups"][0], r["resources"][0], tuple(r["verbs"]), tuple(r.get("resourceNames", ())))
        for r in rules
    ) == [
        ("", "events", ("create",), ()),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", ("get", "update"), (FULLNAME,)),
        ("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch"), ()),
        ("apps", "deployments", ("get", "list", "watch"), ()),
        ("argoproj.io", "applications", ("get", "list", "watch"), ()),
        ("helm.cattle.io", "helmcharts", ("get", "list", "watch"), ()),
        ("helm.toolkit.fluxcd.io", "helmreleases", ("get", "list", "watch"), ()),
        ("source.toolkit.fluxcd.io", "helmcharts", ("get", "list", "watch"), ()),
        ("source.toolkit.fluxcd.io", "ocirepositories", ("get", "list", "watch"), ()),
    ]
    assert all(len(r["apiGroups"]) == 1 and len(r["resources"]) == 1 for r in rules)
    role = one(default_docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
    ]


def test_helm_installs_the_webhook_configuration_empty(default_docs: list[Doc]) -> None:
    shell = one(default_docs, "ValidatingWebhookConfiguration")
    assert shell["metadata"]["name"] == FULLNAME
    assert "webhooks" not in shell, "a configuration with webhooks would be live before any pod is ready"
    assert registered_config(default_docs)["metadata"]["name"] == FULLNAME
    assert set(webhooks(default_docs)) == set(WEBHOOKS)


def test_the_pods_mount_the_webhooks_they_register(default_docs: list[Doc]) -> None:
    volumes = {v["name"]: v for v in pod_spec(default_docs)["volumes"]}
    assert volumes["webhook"]["configMap"]["name"] == f"{FULLNAME}-webhook"
    mounts = {m["name"]: m["mountPath"] for m in container(default_docs)["volumeMounts"]}
    assert mounts["webhook"] == "/etc/crdguard/webhook"
    env = {e["name"]: e for e in container(default_docs)["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_installing_without_an_image_fails_and_says_how_to_build_one(helm: Helm) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, check=False)
    assert result.returncode != 0
    assert "image.repository is required" in result.stderr
    assert "Dockerfile" in result.stderr
    assert "docker build -t <registry>/crdguard:0.1.0 . && docker push" in result.stderr


def test_rbac_covers_every_kind_the_rules_judge(default_docs: list[Doc]) -> None:
    from webhook.rules.objects import JUDGED_KINDS

    granted = {
        (r["apiGroups"][0], r["resources"][0])
        for r in one(default_docs, "ClusterRole")["rules"]
        if "list" in r["verbs"]
    }
    resources = {"CustomResourceDefinition": "customresourcedefinitions", "Deployment": "deployments"}
    resources |= {"HelmRelease": "helmreleases", "OCIRepository": "ocirepositories"}
    resources |= {"HelmChart": "helmcharts", "Application": "applications"}
    assert granted == {(group, resources[kind]) for group, kind in JUDGED_KINDS}


def test_the_watches_read_what_the_cluster_role_grants(default_docs: list[Doc]) -> None:
    from webhook.state.watch import RESOURCES

    # What it may list and watch, exactly; its writes (own webhook configuration, Events) are not watches.
    granted = {
        (r["apiGroups"][0], r["resources"][0])
        for r in one(default_docs, "ClusterRole")["rules"]
        if "watch" in r["verbs"]
    }
    assert {(r.group, r.plural) for r in RESOURCES} == granted


def test_no_hook_creates_cluster_scoped_objects(helm: Helm) -> None:
    # helm uninstall deletes release objects but never hook objects: hooks stay namespaced.
    for mode in MODES:
        for doc in helm.template(*MODES[mode]):
            if "helm.sh/hook" in doc["metadata"].get("annotations", {}):
                assert doc["metadata"].get("namespace") == NAMESPACE
                assert "hook-succeeded" in doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"]


# -- values that change the rendering -------------------------------------------------------


def extra_catalog_args() -> list[str]:
    return ["--set-file", f"catalog.extra.50-site\\.yaml={EXTRA_CATALOG_FILE}"]


OVERRIDES: list[Any] = [
    pytest.param(
        ["--set", "webhook.failurePolicy=Ignore"],
        lambda docs: {w["failurePolicy"] for w in webhooks(docs).values()} == {"Ignore"},
        id="failurePolicy Ignore reaches every webhook",
    ),
    pytest.param(
        ["--set", "webhook.timeoutSeconds=12"],
        lambda docs: {w["timeoutSeconds"] for w in webhooks(docs).values()} == {12},
        id="timeoutSeconds reaches every webhook",
    ),
    pytest.param(
        ["--set", "priorityClassName=system-cluster-critical"],
        lambda docs: pod_spec(docs)["priorityClassName"] == "system-cluster-critical",
        id="priorityClassName reaches the pod",
    ),
    pytest.param(
        [],
        lambda docs: "priorityClassName" not in pod_spec(docs),
        id="no priorityClassName by default",
    ),
    pytest.param(
        ["--set", "terminationGracePeriodSeconds=60", "--set", "gracefulShutdownSeconds=45"],
        lambda docs: (
            pod_spec(docs)["terminationGracePeriodSeconds"] == 60
            and "--graceful-shutdown=45" in container(docs)["args"]
        ),
        id="grace periods reach the pod and the server",
    ),
    pytest.param(
        ["--set", "preStopSleepSeconds=0"],
        lambda docs: "lifecycle" not in container(docs),
        id="preStopSleepSeconds=0 drops the preStop hook",
    ),
    pytest.param(
        ["--set", "enforcement=warn", "--set", "logLevel=debug"],
        lambda docs: (
            "--enforcement=warn" in container(docs)["args"]
            and container(docs)["command"] == ["crdguard", "--log-level=debug", "serve"]
        ),
        id="enforcement and log level reach the server",
    ),
    pytest.param(
        ["--set", "image.digest=sha256:" + "a" * 64, "--set", "image.pullPolicy=Always"],
        lambda docs: (
            container(docs)["image"] == f"{IMAGE_REPOSITORY}@sha256:" + "a" * 64
            and container(docs)["imagePullPolicy"] == "Always"
        ),
        id="a digest pins the image",
    ),
    pytest.param(
        ["--set", "image.tag=dev"],
        lambda docs: container(docs)["image"] == f"{IMAGE_REPOSITORY}:dev",
        id="image.tag replaces appVersion",
    ),
    pytest.param(
        ["--set", "podDisruptionBudget.enabled=false", "--set", "replicaCount=1"],
        lambda docs: (
            not [d for d in docs if d["kind"] == "PodDisruptionBudget"]
            and one(docs, "Deployment")["spec"]["replicas"] == 1
        ),
        id="a single replica without a PodDisruptionBudget",
    ),
    pytest.param(
        ["--set", "podAntiAffinity.enabled=false"],
        lambda docs: "affinity" not in pod_spec(docs),
        id="anti-affinity can be turned off",
    ),
    pytest.param(
        ["--set", "webhook.excludedNamespaces={kube-system,flux-system}"],
        lambda docs: (
            webhooks(docs)["flux.crdguard.io"]["namespaceSelector"]["matchExpressions"][0]["values"]
            == [NAMESPACE, "kube-system", "flux-system"]
        ),
        id="more namespaces can be excluded",
    ),
    pytest.param(
        ["--set", "webhook.crdNames={backendtlspolicies.gateway.networking.k8s.io}"],
        lambda docs: (
            webhooks(docs)["crds.crdguard.io"]["matchConditions"][0]["expression"]
            == 'request.name in ["backendtlspolicies.gateway.networking.k8s.io"]'
        ),
        id="crdNames narrows the CRD webhook",
    ),
    pytest.param(
        ["--set-json", "webhook.crdNames=[]"],
        lambda docs: set(webhooks(docs)) == set(WEBHOOKS) - {"crds.crdguard.io"},
        id="no crdNames drops the CRD webhook",
    ),
    pytest.param(
        extra_catalog_args(),
        lambda docs: (
            one(docs, "ConfigMap", f"{FULLNAME}-catalog")["data"] == {"50-site.yaml": EXTRA_CATALOG}
            and "--catalog=/etc/crdguard/catalog/50-site.yaml" in container(docs)["args"]
            and GADGETS_CRD in webhooks(docs)["crds.crdguard.io"]["matchConditions"][0]["expression"]
            and '"sitecorp/site-gateway"'
            in webhooks(docs)["deployments.crdguard.io"]["matchConditions"][0]["expression"]
            and '"kgateway-dev/kgateway"'
            in webhooks(docs)["deployments.crdguard.io"]["matchConditions"][0]["expression"]
            and all(
                '"site-gateway-helm"' in webhooks(docs)[name]["matchConditions"][0]["expression"]
                for name in ("flux.crdguard.io", "argocd.crdguard.io", "k3s.crdguard.io")
            )
        ),
        id="catalog.extra is mounted, passed, and widens every matchCondition",
    ),
    pytest.param(
        [
            "--set-string",
            "catalog.extra.20-b\\.yaml=apiVersion: crdguard.io/v1alpha1\nkind: CompatibilityCatalog\n",
            "--set-string",
            "catalog.extra.10-a\\.yaml=apiVersion: crdguard.io/v1alpha1\nkind: CompatibilityCatalog\n",
        ],
        lambda docs: (
            [a for a in container(docs)["args"] if a.startswith("--catalog")]
            == ["--catalog=/etc/crdguard/catalog/10-a.yaml", "--catalog=/etc/crdguard/catalog/20-b.yaml"]
        ),
        id="extra catalogs are passed in file-name order",
    ),
    pytest.param(
        [],
        lambda docs: (
            not [d for d in docs if d["kind"] in ("ServiceMonitor", "NetworkPolicy")]
            and "--enable-state-endpoint" not in container(docs)["args"]
        ),
        id="no ServiceMonitor, no NetworkPolicy and no /state by default",
    ),
    pytest.param(
        ["--set", "metrics.enableStateEndpoint=true"],
        lambda docs: "--enable-state-endpoint" in container(docs)["args"],
        id="enableStateEndpoint turns /state on",
    ),
    pytest.param(
        ["--set", "metrics.port=9090", "--set", "metrics.host=127.0.0.1"],
        lambda docs: (
            {"--metrics-port=9090", "--metrics-host=127.0.0.1"} <= set(container(docs)["args"])
            and container(docs)["ports"][1] == {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
            and one(docs, "Service")["spec"]["ports"][1]["port"] == 9090
        ),
        id="metrics.port and metrics.host reach the server, the container and the Service",
    ),
    pytest.param(
        [
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom",
        ],
        lambda docs: (
            one(docs, "ServiceMonitor")["spec"]["endpoints"]
            # honorLabels keeps a conflict's own namespace label (not renamed to exported_namespace).
            == [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "scheme": "http",
                    "interval": "30s",
                    "honorLabels": True,
                }
            ]
            and one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
            == one(docs, "Service")["spec"]["selector"]
            and one(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"
        ),
        id="the ServiceMonitor scrapes the Service's metrics port",
    ),
    pytest.param(
        [
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
        ],
        lambda docs: (
            one(docs, "NetworkPolicy")["spec"]["ingress"]
            == [
                {"ports": [{"port": "https", "protocol": "TCP"}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
                    "ports": [{"port": "metrics", "protocol": "TCP"}],
                },
            ]
            and one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
            == one(docs, "Service")["spec"]["selector"]
        ),
        id="the NetworkPolicy opens the admission port to all and metrics only to metricsFrom",
    ),
    pytest.param(
        ["--set", "networkPolicy.enabled=true"],
        lambda docs: (
            one(docs, "NetworkPolicy")["spec"]["ingress"]
            == [{"ports": [{"port": "https", "protocol": "TCP"}]}]
        ),
        id="a NetworkPolicy without metricsFrom closes the metrics port",
    ),
]


@pytest.mark.parametrize(("args", "check"), OVERRIDES)
def test_value_override(helm: Helm, args: list[str], check: Callable[[list[Doc]], bool]) -> None:
    assert check(helm.template(*args))


def test_a_catalog_change_rolls_the_pods(helm: Helm, default_docs: list[Doc]) -> None:
    def checksum(docs: list[Doc]) -> str:
        value: str = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/catalog"
        ]
        return value

    assert checksum(helm.template(*extra_catalog_args())) != checksum(default_docs)


def test_the_extra_catalog_used_here_is_one_crdguard_accepts(tmp_path: Path) -> None:
    path = tmp_path / "50-site.yaml"
    path.write_text(EXTRA_CATALOG)
    catalog = load_catalog([str(path)])
    assert "site-gateway" in catalog.components and "site-gateway" not in CATALOG.components


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--set", "tls.mode=existingSecret", "--set", "tls.existingSecret=x"],
            "tls.mode=existingSecret needs tls.caBundle",
            id="existingSecret without caBundle fails",
        ),
        pytest.param(
            ["--set", "tls.mode=existingSecret", "--set-file", f"tls.caBundle={CA_BUNDLE_FILE}"],
            "tls.mode=existingSecret needs tls.existingSecret",
            id="existingSecret without a Secret name fails",
        ),
        pytest.param(
            [
                "--set",
                "tls.mode=existingSecret",
                "--set",
                "tls.existingSecret=x",
                "--set",
                "tls.caBundle=bm90IGEgY2VydGlmaWNhdGU=",
            ],
            "tls.caBundle must be base64 of a PEM certificate",
            id="a caBundle that is not a PEM certificate fails",
        ),
        pytest.param(
            ["--set-file", f"tls.caBundle={CA_BUNDLE_FILE}"],
            "tls.caBundle is only read with tls.mode=existingSecret",
            id="a caBundle with selfSigned fails",
        ),
        pytest.param(
            ["--set", "tls.mode=certManager", "--set", "tls.existingSecret=x"],
            "tls.existingSecret is only read with tls.mode=existingSecret",
            id="a Secret name with certManager fails",
        ),
        pytest.param(
            ["--set", "webhook.url=https://127.0.0.1:9443/validate"],
            "set tls.mode=existingSecret and tls.caBundle",
            id="url with selfSigned fails",
        ),
        pytest.param(
            ["--set", "gracefulShutdownSeconds=30"],
            "gracefulShutdownSeconds (30) + preStopSleepSeconds (5) must be lower than "
            "terminationGracePeriodSeconds (30)",
            id="a graceful shutdown as long as the grace period fails",
        ),
        pytest.param(
            ["--set", "preStopSleepSeconds=10"],
            "gracefulShutdownSeconds (20) + preStopSleepSeconds (10) must be lower than "
            "terminationGracePeriodSeconds (30)",
            id="a preStop sleep that eats the grace period fails",
        ),
        pytest.param(
            ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.host=127.0.0.1"],
            "metrics.host=127.0.0.1 keeps the metrics port pod-local",
            id="a ServiceMonitor for a pod-local metrics port fails",
        ),
        pytest.param(
            ["--set", "replicaCount=1"],
            "podDisruptionBudget.minAvailable (1) must be lower than replicaCount (1)",
            id="a PDB that blocks every drain fails",
        ),
        pytest.param(
            ["--set-string", "catalog.extra.bad\\.yaml=kind: Something"],
            "catalog.extra[bad.yaml]: every document must be apiVersion crdguard.io/v1alpha1",
            id="an extra catalog of another kind fails",
        ),
        pytest.param(
            ["--set-string", "catalog.extra.bad\\.yaml=a: [unclosed"],
            "catalog.extra[bad.yaml] is not valid YAML",
            id="an extra catalog that is not YAML fails",
        ),
        pytest.param(
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create=false",
            id="an existing ServiceAccount needs its name",
        ),
    ],
)
def test_contradictory_values_fail_with_a_clear_message(helm: Helm, args: list[str], message: str) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *IMAGE, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


SCHEMA_REJECTIONS = [
    ("replicas=3", "at '': additional properties 'replicas'", "a misspelt top-level value is rejected"),
    (
        "webhook.failurPolicy=Ignore",
        "at '/webhook': additional properties 'failurPolicy'",
        "a misspelt nested value is rejected",
    ),
    (
        "tls.selfSigned.validity=10",
        "at '/tls/selfSigned': additional properties 'validity'",
        "a misspelt deeply nested value is rejected",
    ),
    ("tls.mode=selfsigned", "at '/tls/mode'", "a TLS mode in the wrong case is rejected"),
    ("webhook.timeoutSeconds=31", "at '/webhook/timeoutSeconds'", "a timeout over 30s is rejected"),
    ("webhook.failurePolicy=fail", "at '/webhook/failurePolicy'", "failurePolicy must be spelt exactly"),
    ("webhook.url=http://127.0.0.1:9443/validate", "at '/webhook/url'", "a plain-HTTP URL is rejected"),
    ("replicaCount=two", "at '/replicaCount'", "a replica count that is text is rejected"),
    ("metrics.port=8443", "at '/metrics/port'", "a metrics port on the admission port is rejected"),
    (
        "metrics.serviceMonitor.enable=true",
        "at '/metrics/serviceMonitor': additional properties 'enable'",
        "a misspelt ServiceMonitor switch is rejected",
    ),
    (
        "networkPolicy.metricsFrom[0].namespaceSelectr.x=y",
        "additional properties 'namespaceSelectr'",
        "a misspelt NetworkPolicy peer is rejected",
    ),
    (
        "resources.requests.gpu=1",
        "at '/resources/requests': additional properties 'gpu'",
        "an unknown resource name is rejected",
    ),
    (
        "catalog.extra.site\\.txt=x",
        "at '/catalog/extra': additional properties 'site.txt'",
        "an extra catalog not named .yaml is rejected",
    ),
]


@pytest.mark.parametrize(("value", "message"), [pytest.param(v, m, id=i) for v, m, i in SCHEMA_REJECTIONS])
def test_schema_rejects(helm: Helm, value: str, message: str) -> None:
    result = helm.run(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *IMAGE, "--set", value, check=False
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_schema_is_strict_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            is_object = node.get("type") == "object" or "properties" in node or "patternProperties" in node
            if is_object and node.get("additionalProperties") is not False and path != "properties.global":
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")

    walk(schema, "")
    assert open_objects == []


def test_schema_and_values_name_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert sorted(schema["properties"]) == sorted(values)


def test_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^\s*[A-Za-z][\w.-]*:(\s|$)")
    uncommented = []
    for i, line in enumerate(lines):
        if key.match(line):
            previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            if not previous.startswith("#"):
                uncommented.append(line.strip())
    assert uncommented == []


def test_default_match_values_mirror_the_default_catalog() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["webhook"]
    documents = [d for d in yaml.safe_load_all(default_catalog_text()) if d]
    rules = [rule for d in documents for rule in d.get("rules", [])]
    assert sorted(values["crdNames"]) == sorted({rule["crd"] for rule in rules}) == DEFAULT_CRDS
    detects = [component["detect"] for d in documents for component in d.get("components", [])]
    match = values["componentMatch"]
    assert sorted(match["images"]) == sorted({i for d in detects for i in d["images"]})
    assert sorted(match["charts"]) == sorted({c for d in detects for c in d.get("charts", [])})
    assert match["labels"] == [d["labels"] for d in detects if d.get("labels")]


def test_make_certs_flags_install_the_existing_secret_mode(helm: Helm, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    made = subprocess.run(
        ["bash", str(MAKE_CERTS), "--service", FULLNAME, "--namespace", NAMESPACE, "--out", str(out)],
        env={**os.environ, "CRDGUARD": str(CRDGUARD)},
        capture_output=True,
        text=True,
        check=True,
    )
    flags = shlex.split(next(line for line in made.stdout.splitlines() if "tls.mode=" in line))
    docs = helm.template(*flags[2:])  # the namespace flag is already given
    secret = yaml.safe_load((out / "secret.yaml").read_text())
    assert {w["clientConfig"]["caBundle"] for w in webhooks(docs).values()} == {secret["data"]["ca.crt"]}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == secret["metadata"]["name"]


# -- installs into the real API server ------------------------------------------------------


def kubectl_json(cluster: ControlPlane, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "--output=json").stdout)


def cluster_scoped_leftovers(cluster: ControlPlane, release: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    kinds = "validatingwebhookconfigurations,clusterroles,clusterrolebindings"
    return cluster.kubectl("get", kinds, "--selector", selector, "--output=name").stdout.split()


@dataclass
class Release:
    cluster: ControlPlane
    name: str
    namespace: str
    args: list[str]
    workdir: Path
    notes: str = ""

    @property
    def fullname(self) -> str:
        return f"{self.name}-crdguard"

    def helm(self, verb: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cluster.helm(
            verb, self.name, str(CHART), "--namespace", self.namespace, *IMAGE, *self.args, *extra
        )

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "--namespace", self.namespace)

    def installed(self) -> bool:
        return (
            self.cluster.helm("status", self.name, "--namespace", self.namespace, check=False).returncode == 0
        )

    def manifest(self) -> str:
        return self.cluster.helm("get", "manifest", self.name, "--namespace", self.namespace).stdout

    def webhook_config(self) -> Doc:
        """The configuration crdguard will register, from the release's ConfigMap."""
        configmap = kubectl_json(
            self.cluster, "get", "configmap", f"{self.fullname}-webhook", "--namespace", self.namespace
        )
        config: Doc = yaml.safe_load(configmap["data"]["webhook.yaml"])
        return config

    def register_webhooks(self) -> None:
        """Write the ConfigMap's webhooks into the installed configuration, as crdguard does."""
        installed = kubectl_json(self.cluster, "get", "validatingwebhookconfiguration", self.fullname)
        installed["webhooks"] = self.webhook_config()["webhooks"]
        self.cluster.kubectl("replace", "--filename=-", input=json.dumps(installed))


@pytest.fixture(scope="class")
def installed(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    helm: Helm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    """The class's release (its RELEASE_NAME and ARGS), installed; uninstalled after its last test."""
    cls = request.cls
    workdir = tmp_path_factory.mktemp(cls.RELEASE_NAME)
    release = Release(control_plane, cls.RELEASE_NAME, cls.RELEASE_NAME, helm.resolve(cls.ARGS), workdir)
    cls.prepare(control_plane, release)
    release.notes = release.helm("install", "--create-namespace").stdout
    try:
        yield release
    finally:
        if release.installed():
            release.uninstall()
        cls.cleanup(control_plane)


class InstalledRelease:
    RELEASE_NAME = ""
    ARGS: ClassVar[list[str]] = []

    @staticmethod
    def prepare(cluster: ControlPlane, release: Release) -> None:
        pass

    @staticmethod
    def cleanup(cluster: ControlPlane) -> None:
        pass

    def test_the_api_server_holds_every_rendered_object(self, installed: Release) -> None:
        manifest = installed.manifest()
        expected = sorted(
            f"{d['kind']}/{d['metadata']['name']}".lower() for d in yaml.safe_load_all(manifest) if d
        )
        found = installed.cluster.kubectl(
            "get", "--filename=-", "--namespace", installed.namespace, "--output=name", input=manifest
        ).stdout.split()
        assert sorted(f"{n.split('/')[0].split('.')[0]}/{n.split('/')[1]}" for n in found) == expected

    def test_helm_registered_no_webhook(self, installed: Release) -> None:
        config = kubectl_json(installed.cluster, "get", "validatingwebhookconfiguration", installed.fullname)
        assert config.get("webhooks", []) == []

    def test_the_api_server_accepts_every_webhook_and_its_cel(self, installed: Release) -> None:
        # The update crdguard will make, as a server-side dry run: the API server validates the
        # webhooks and compiles their CEL, and answers with what it would store.
        config = kubectl_json(installed.cluster, "get", "validatingwebhookconfiguration", installed.fullname)
        config["webhooks"] = installed.webhook_config()["webhooks"]
        stored_config = json.loads(
            installed.cluster.kubectl(
                "replace", "--dry-run=server", "--filename=-", "--output=json", input=json.dumps(config)
            ).stdout
        )
        stored = {w["name"]: w for w in stored_config["webhooks"]}
        assert sorted(stored) == sorted(WEBHOOKS)
        rendered = webhooks([d for d in yaml.safe_load_all(installed.manifest()) if d], installed.fullname)
        for name, webhook in rendered.items():
            assert stored[name]["matchConditions"] == webhook["matchConditions"]
            assert stored[name]["failurePolicy"] == "Fail"


def assert_uninstall_leaves_nothing_cluster_scoped(release: Release) -> None:
    assert cluster_scoped_leftovers(release.cluster, release.name), "the release should have some"
    release.uninstall()
    assert cluster_scoped_leftovers(release.cluster, release.name) == []
    for kind in ("validatingwebhookconfiguration", "clusterrole", "clusterrolebinding"):
        result = release.cluster.kubectl("get", kind, release.fullname, check=False)
        assert "NotFound" in result.stderr


class TestSelfSignedRelease(InstalledRelease):
    RELEASE_NAME = "guard-self"
    ARGS: ClassVar[list[str]] = []

    def secret(self, release: Release) -> dict[str, str]:
        data: dict[str, str] = kubectl_json(
            release.cluster, "get", "secret", f"{release.fullname}-tls", "--namespace", release.namespace
        )["data"]
        return data

    @pytest.mark.parametrize(
        "step",
        [
            pytest.param(
                "rollout status deployment/guard-self-crdguard", id="the notes say to wait for the rollout"
            ),
            pytest.param("helm test guard-self -n guard-self", id="the notes say to run helm test"),
            pytest.param("/readyz", id="the notes show how to reach readyz by hand"),
            pytest.param("-- crdguard audit --in-cluster", id="the notes say to audit existing conflicts"),
            pytest.param("--dry-run=server", id="the notes suggest a server-side dry run"),
        ],
    )
    def test_install_notes_say_what_to_check_next(self, installed: Release, step: str) -> None:
        assert step in installed.notes

    def test_the_webhook_trusts_the_generated_ca(self, installed: Release) -> None:
        secret = self.secret(installed)
        bundles = {w["clientConfig"]["caBundle"] for w in installed.webhook_config()["webhooks"]}
        assert bundles == {secret["ca.crt"]}

    def test_the_certificate_survives_an_upgrade(self, installed: Release) -> None:
        before = self.secret(installed)
        installed.helm("upgrade", "--set", "replicaCount=3")
        after = self.secret(installed)
        assert after == before
        bundles = {w["clientConfig"]["caBundle"] for w in installed.webhook_config()["webhooks"]}
        assert bundles == {before["ca.crt"]}
        deployment = kubectl_json(
            installed.cluster, "get", "deployment", installed.fullname, "--namespace", installed.namespace
        )
        assert deployment["spec"]["replicas"] == 3, "the upgrade itself should have gone through"

    # Last in the class, since it uninstalls (pytest runs a class's own tests in definition order,
    # after the inherited ones).
    def test_uninstall_leaves_nothing_cluster_scoped(self, installed: Release) -> None:
        assert_uninstall_leaves_nothing_cluster_scoped(installed)


class TestExistingSecretRelease(InstalledRelease):
    """Installed with the Secret and the flags certs/make-certs.sh writes and prints."""

    RELEASE_NAME = "guard-existing"
    ARGS: ClassVar[list[str]] = []

    @staticmethod
    def prepare(cluster: ControlPlane, release: Release) -> None:
        out = release.workdir / "make-certs"
        made = subprocess.run(
            ["bash", str(MAKE_CERTS), "--service", release.fullname, "--namespace", release.namespace],
            env={**os.environ, "CRDGUARD": str(CRDGUARD), "CRDGUARD_CERTS_OUT": str(out)},
            capture_output=True,
            text=True,
            check=True,
        )
        flags = shlex.split(next(line for line in made.stdout.splitlines() if "tls.mode=" in line))
        assert flags[:2] == ["--namespace", release.namespace]
        release.args = flags[2:]
        cluster.kubectl("create", "namespace", release.namespace)
        cluster.kubectl("apply", "--filename", str(out / "secret.yaml"))

    def test_the_webhook_trusts_the_ca_make_certs_wrote(self, installed: Release) -> None:
        ca_bundle = (installed.workdir / "make-certs" / "caBundle").read_text().strip()
        assert {w["clientConfig"]["caBundle"] for w in installed.webhook_config()["webhooks"]} == {ca_bundle}

    def test_the_pods_mount_the_secret_make_certs_wrote(self, installed: Release) -> None:
        deployment = kubectl_json(
            installed.cluster, "get", "deployment", installed.fullname, "--namespace", installed.namespace
        )
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["certs"]["secret"]["secretName"] == f"{installed.fullname}-tls"

    # Last in the class, since it uninstalls (pytest runs a class's own tests in definition order,
    # after the inherited ones).
    def test_uninstall_leaves_nothing_cluster_scoped(self, installed: Release) -> None:
        assert_uninstall_leaves_nothing_cluster_scoped(installed)


def stand_in_crd(group: str, kind: str, plural: str, version: str = "v1") -> Doc:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


CERT_MANAGER_STAND_INS = [
    stand_in_crd("cert-manager.io", "Issuer", "issuers"),
    stand_in_crd("cert-manager.io", "Certificate", "certificates"),
]


class TestCertManagerRelease(InstalledRelease):
    """cert-manager itself cannot be installed here: its two kinds are stood in for by schemaless
    CRDs, so this shows the release installs and uninstalls cleanly, not that cert-manager
    accepts the Issuers and Certificates (the rendering tests check those fields)."""

    RELEASE_NAME = "guard-cm"
    ARGS: ClassVar[list[str]] = ["--set", "tls.mode=certManager"]

    @staticmethod
    def prepare(cluster: ControlPlane, release: Release) -> None:
        cluster.kubectl(
            "apply",
            "--filename=-",
            input=json.dumps({"kind": "List", "apiVersion": "v1", "items": CERT_MANAGER_STAND_INS}),
        )
        names = [f"crd/{crd['metadata']['name']}" for crd in CERT_MANAGER_STAND_INS]
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)

    @staticmethod
    def cleanup(cluster: ControlPlane) -> None:
        names = [crd["metadata"]["name"] for crd in CERT_MANAGER_STAND_INS]
        cluster.kubectl("delete", "crd", *names, "--ignore-not-found", "--wait=false")

    def test_the_webhook_asks_cainjector_for_its_ca(self, installed: Release) -> None:
        config = installed.webhook_config()
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{installed.namespace}/{installed.fullname}-serving"
        )
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])

    # Last in the class, since it uninstalls (pytest runs a class's own tests in definition order,
    # after the inherited ones).
    def test_uninstall_leaves_nothing_cluster_scoped(self, installed: Release) -> None:
        assert_uninstall_leaves_nothing_cluster_scoped(installed)


# -- pod templates under the restricted Pod Security level ---------------------------------

PSS_NAMESPACE = "crdguard-pss"


@pytest.fixture(scope="module")
def restricted_namespace(control_plane: ControlPlane) -> str:
    control_plane.kubectl(
        "apply",
        "--filename=-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": PSS_NAMESPACE,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                },
            }
        ),
    )
    return PSS_NAMESPACE


def as_pod(name: str, spec: Doc, namespace: str) -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )


def without_container_security_context(spec: Doc) -> Doc:
    spec = copy.deepcopy(spec)
    for c in spec["containers"]:
        c.pop("securityContext")
    return spec


@pytest.mark.parametrize(
    ("args", "source", "transform", "admitted"),
    [
        pytest.param([], "Deployment", None, True, id="the crdguard pod is admitted as restricted"),
        pytest.param(
            extra_catalog_args(),
            "Deployment",
            None,
            True,
            id="the crdguard pod with extra catalogs is admitted",
        ),
        pytest.param([], "Pod", None, True, id="the helm test pod is admitted as restricted"),
        pytest.param(
            MODES["existingSecret"], "Pod", None, True, id="the helm test pod with tls.caBundle is admitted"
        ),
        pytest.param(
            [],
            "Deployment",
            without_container_security_context,
            False,
            id="the crdguard pod without its container securityContext is rejected",
        ),
    ],
)
def test_pod_security_restricted(
    control_plane: ControlPlane,
    restricted_namespace: str,
    helm: Helm,
    args: list[str],
    source: str,
    transform: Callable[[Doc], Doc] | None,
    admitted: bool,
) -> None:
    doc = one(helm.template(*args), source)
    spec = doc["spec"]["template"]["spec"] if source == "Deployment" else doc["spec"]
    if transform is not None:
        spec = transform(spec)
    result = control_plane.kubectl(
        "create",
        "--dry-run=server",
        "--filename=-",
        input=as_pod("pss-check", spec, restricted_namespace),
        check=False,
    )
    if admitted:
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr
    else:
        assert result.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in result.stderr


# -- which requests the webhooks send, as the real server decides -------------------------

APPS_NAMESPACE = "guard-apps"
URL_RELEASE = "guard-url"
# The CRDs of the kinds crdguard reads besides CRDs and Deployments: upstream file, or None for Argo CD's
# Application CRD, read from its Go module at a release tag.
SOURCE_CRDS = {
    "helmreleases.helm.toolkit.fluxcd.io": "flux/helmreleases.yaml",
    "ocirepositories.source.toolkit.fluxcd.io": "flux/ocirepositories.yaml",
    "helmcharts.source.toolkit.fluxcd.io": "flux/helmcharts.yaml",
    "helmcharts.helm.cattle.io": "k3s-helm-controller/helmcharts.yaml",
    "applications.argoproj.io": None,
}


def argocd_crd() -> Doc:
    try:
        return argocd_application_crd()
    except BundleUnavailable as exc:
        unavailable(f"Argo CD's Application CRD is not obtainable: {exc}")


def application(name: str, source: Doc, *, sources: bool = False) -> Doc:
    spec: Doc = {"project": "default", "destination": {"server": "https://kubernetes.default.svc"}}
    spec.update({"sources": [source]} if sources else {"source": source})
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": APPS_NAMESPACE},
        "spec": spec,
    }


def helmchart(group: str, name: str, chart: str, namespace: str = APPS_NAMESPACE) -> Doc:
    """A Flux (source.toolkit.fluxcd.io) or k3s (helm.cattle.io) HelmChart."""
    spec: Doc = {"chart": chart, "version": "v2.0.4"}
    if group == "source.toolkit.fluxcd.io":
        spec |= {"interval": "10m", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}
    return {
        "apiVersion": f"{group}/v1",
        "kind": "HelmChart",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def deployment(name: str, namespace: str, image: str, labels: dict[str, str] | None = None) -> Doc:
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


def helmrelease(name: str, chart: str | None) -> Doc:
    spec: Doc = {"interval": "10m"}
    if chart is None:
        spec["chartRef"] = {"kind": "OCIRepository", "name": "kgateway"}
    else:
        spec["chart"] = {"spec": {"chart": chart, "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": APPS_NAMESPACE},
        "spec": spec,
    }


def ocirepository(name: str, url: str) -> Doc:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": name, "namespace": APPS_NAMESPACE},
        "spec": {"interval": "10m", "url": url, "ref": {"tag": "v2.0.4"}},
    }


def upstream_crd(upstream: Path, relative: str, name: str) -> Doc:
    for doc in yaml.safe_load_all((upstream / relative).read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] == name:
            return dict(doc)
    raise AssertionError(f"{name} not in {relative}")


@pytest.fixture(scope="module")
def url_release(
    control_plane: ControlPlane, helm: Helm, upstream: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """A release whose webhooks call a closed port on 127.0.0.1 with failurePolicy Fail: every
    request a webhook sends is rejected with "failed calling webhook", every other one passes."""
    cluster = control_plane
    created: list[str] = []
    crds = [stand_in_crd("crdguard-e2e.example.com", "Gadget", "gadgets")]
    crds.append(stand_in_crd("crdguard-e2e.example.com", "Widget", "widgets"))
    for name, path in SOURCE_CRDS.items():
        if cluster.kubectl("get", "crd", name, check=False).returncode != 0:
            crds.append(argocd_crd() if path is None else upstream_crd(upstream, path, name))
    for crd in crds:
        cluster.kubectl("create", "--filename=-", input=json.dumps(crd))
        created.append(crd["metadata"]["name"])
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in created))
    cluster.kubectl("create", "namespace", APPS_NAMESPACE)
    args = [
        "--set",
        f"webhook.url=https://127.0.0.1:{free_port()}/validate",
        "--set",
        "tls.mode=existingSecret",
        "--set-file",
        f"tls.caBundle={helm.ca_bundle_file}",
        *extra_catalog_args(),
    ]
    release = Release(cluster, URL_RELEASE, URL_RELEASE, helm.resolve(args), tmp_path_factory.mktemp("url"))
    release.helm("install", "--create-namespace")
    release.register_webhooks()
    try:
        yield release
    finally:
        release.uninstall()
        cluster.kubectl("delete", "crd", *created, "--ignore-not-found", "--wait=false")


@dataclass(frozen=True)
class Request:
    verb: str  # create, delete or label, each as a server-side dry run
    target: Callable[[Path], Doc] | str
    sent_to: str | None  # the webhook that receives it, or None when none does

    def run(self, cluster: ControlPlane, upstream: Path) -> subprocess.CompletedProcess[str]:
        if self.verb == "create":
            assert callable(self.target)
            body = json.dumps(self.target(upstream))
            return cluster.kubectl("create", "--dry-run=server", "--filename=-", input=body, check=False)
        assert isinstance(self.target, str)
        if self.verb == "delete":
            return cluster.kubectl("delete", "--dry-run=server", self.target, check=False)
        return cluster.kubectl("label", "--dry-run=server", self.target, "crdguard-e2e=touched", check=False)


def kgateway(
    namespace: str = APPS_NAMESPACE, image: str = f"{KGATEWAY_IMAGE}:v2.0.4"
) -> Callable[[Path], Doc]:
    return lambda _: deployment("kgateway", namespace, image)


REQUESTS = [
    pytest.param(
        Request(
            "create", lambda _: stand_in_crd("crdguard-e2e.example.com", "Doohickey", "doohickeys"), None
        ),
        id="creating a CRD no catalog reads is not sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda up: upstream_crd(
                up, "gateway-api/v1.4.0/standard-install.yaml", "backendtlspolicies.gateway.networking.k8s.io"
            ),
            "crds.crdguard.io",
        ),
        id="creating Gateway API v1.4.0's BackendTLSPolicy CRD is sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda up: upstream_crd(
                up,
                "gateway-api-inference-extension/v1.2.0/config-crd-bases/inference.networking.k8s.io_inferencepools.yaml",
                "inferencepools.inference.networking.k8s.io",
            ),
            "crds.crdguard.io",
        ),
        id="creating the InferencePool CRD is sent",
    ),
    pytest.param(
        Request("delete", f"crd/{GADGETS_CRD}", "crds.crdguard.io"),
        id="deleting a CRD an extra catalog guards is sent (by request.name, object is null)",
    ),
    pytest.param(
        Request("label", f"crd/{GADGETS_CRD}", "crds.crdguard.io"),
        id="updating a CRD an extra catalog guards is sent",
    ),
    pytest.param(
        Request("delete", f"crd/{WIDGETS_CRD}", None), id="deleting a CRD no catalog reads is not sent"
    ),
    pytest.param(
        Request("create", kgateway(), "deployments.crdguard.io"), id="a kgateway Deployment is sent"
    ),
    pytest.param(
        Request("create", kgateway(image=f"{KGATEWAY_IMAGE}@sha256:{'b' * 64}"), "deployments.crdguard.io"),
        id="a kgateway Deployment pinned by digest is sent",
    ),
    pytest.param(
        Request("create", kgateway(image=KGATEWAY_IMAGE), "deployments.crdguard.io"),
        id="an untagged kgateway Deployment is sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: deployment(
                "gw", APPS_NAMESPACE, "registry.example/gw:1", {"app.kubernetes.io/name": "kgateway"}
            ),
            "deployments.crdguard.io",
        ),
        id="a Deployment labelled as kgateway is sent whatever its image",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: deployment("site", APPS_NAMESPACE, "registry.example/sitecorp/site-gateway:v1.5.0"),
            "deployments.crdguard.io",
        ),
        id="a Deployment of an extra catalog's component is sent",
    ),
    pytest.param(
        Request("create", lambda _: deployment("web", APPS_NAMESPACE, "registry.example/nginx:1.27"), None),
        id="an unrelated Deployment is not sent",
    ),
    pytest.param(
        Request("create", kgateway(image=f"{KGATEWAY_IMAGE}-crds-installer:v2.0.4"), None),
        id="an image whose name only starts with kgateway is not sent",
    ),
    pytest.param(
        Request(
            "create",
            kgateway(image="mirror.example:5000/kgateway-dev/kgateway:v2.0.4"),
            "deployments.crdguard.io",
        ),
        id="a kgateway Deployment from a mirror keeping the path is sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: deployment("other", APPS_NAMESPACE, "registry.example/other/kgateway:v2.0.4"),
            None,
        ),
        id="another repository whose last segment is kgateway is not sent",
    ),
    pytest.param(
        Request("create", kgateway(namespace=URL_RELEASE), None),
        id="a kgateway Deployment in the release namespace is not sent",
    ),
    pytest.param(
        Request("create", kgateway(namespace="kube-system"), None),
        id="a kgateway Deployment in kube-system is not sent",
    ),
    pytest.param(
        Request("create", lambda _: helmrelease("kgateway", "kgateway"), "flux.crdguard.io"),
        id="a HelmRelease of the kgateway chart is sent",
    ),
    pytest.param(
        Request("create", lambda _: helmrelease("kgateway", None), "flux.crdguard.io"),
        id="a HelmRelease with a chartRef is sent",
    ),
    pytest.param(
        Request("create", lambda _: helmrelease("podinfo", "podinfo"), None),
        id="a HelmRelease of another chart is not sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: ocirepository("kgateway", "oci://registry.example/kgateway-dev/charts/kgateway"),
            "flux.crdguard.io",
        ),
        id="an OCIRepository of the kgateway chart is sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: ocirepository(
                "kgateway-crds", "oci://registry.example/kgateway-dev/charts/kgateway-crds"
            ),
            None,
        ),
        id="an OCIRepository of another chart is not sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: helmchart("source.toolkit.fluxcd.io", "kgateway", "kgateway"),
            "flux.crdguard.io",
        ),
        id="a Flux HelmChart of the kgateway chart is sent",
    ),
    pytest.param(
        Request("create", lambda _: helmchart("source.toolkit.fluxcd.io", "podinfo", "podinfo"), None),
        id="a Flux HelmChart of another chart is not sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: application(
                "kgateway", {"repoURL": "cr.kgateway.dev/kgateway-dev/charts", "chart": "kgateway"}
            ),
            "argocd.crdguard.io",
        ),
        id="an Argo CD Application of the kgateway chart is sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: application(
                "kgateway-oci",
                {"repoURL": "oci://cr.kgateway.dev/kgateway-dev/charts/kgateway"},
                sources=True,
            ),
            "argocd.crdguard.io",
        ),
        id="a multi-source Application whose OCI repoURL ends in the chart is sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: application("web", {"repoURL": "https://git.example/web.git", "path": "deploy"}),
            None,
        ),
        id="an Application of something else is not sent",
    ),
    pytest.param(
        Request(
            "create",
            lambda _: helmchart(
                "helm.cattle.io",
                "kgateway",
                "oci://cr.kgateway.dev/kgateway-dev/charts/kgateway",
                "kube-system",
            ),
            "k3s.crdguard.io",
        ),
        id="a k3s HelmChart of the kgateway chart in kube-system is sent",
    ),
    pytest.param(
        Request("create", lambda _: helmchart("helm.cattle.io", "podinfo", "podinfo", "kube-system"), None),
        id="a k3s HelmChart of another chart is not sent",
    ),
]


def catalogued_crd(group: str, kind: str, plural: str) -> Doc:
    crd = stand_in_crd(group, kind, plural)
    if group == "k8s.io" or group.endswith(".k8s.io"):
        # The API server refuses *.k8s.io groups without this annotation (Kubernetes KEP 1111).
        crd["metadata"]["annotations"] = {
            "api-approved.kubernetes.io": "https://github.com/kubernetes/enhancements/pull/1111"
        }
    return crd


def catalog_requests() -> list[Any]:
    """For every component and CRD of the default catalog (whatever it holds as it grows), a
    request that must reach crdguard, and near misses that must not."""
    catalog = load_catalog()
    params = []
    for component in sorted(catalog.components.values(), key=lambda c: c.name):
        for path in component.detect.images:
            for image in (f"registry.example/mirror/{path}:v1.0.0", f"{path}@sha256:{'d' * 64}"):
                params.append(
                    pytest.param(
                        Request(
                            "create",
                            lambda _, i=image: deployment("ctrl", APPS_NAMESPACE, i),
                            "deployments.crdguard.io",
                        ),
                        id=f"{component.name}: a Deployment running {image} is sent",
                    )
                )
            if path.startswith("library/"):
                bare = path.removeprefix("library/") + ":v1.0.0"
                params.append(
                    pytest.param(
                        Request(
                            "create",
                            lambda _, i=bare: deployment("ctrl", APPS_NAMESPACE, i),
                            "deployments.crdguard.io",
                        ),
                        id=f"{component.name}: a Deployment running the Docker Hub image {bare} is sent",
                    )
                )
            # Near misses: a longer last segment, and the last segment under another repository.
            last = path.rsplit("/", 1)[-1]
            for near in (
                f"registry.example/{path}-sidecar:v1.0.0",
                f"registry.example/elsewhere/{last}:v1.0.0",
            ):
                params.append(
                    pytest.param(
                        Request("create", lambda _, i=near: deployment("ctrl", APPS_NAMESPACE, i), None),
                        id=f"{component.name}: a Deployment running {near} is not sent",
                    )
                )
        if component.detect.labels:
            labels = dict(component.detect.labels)
            params.append(
                pytest.param(
                    Request(
                        "create",
                        lambda _, la=labels: deployment("ctrl", APPS_NAMESPACE, "registry.example/x:1", la),
                        "deployments.crdguard.io",
                    ),
                    id=f"{component.name}: a Deployment with its labels is sent",
                )
            )
        for chart in sorted(component.detect.charts):
            source = {"repoURL": "https://charts.example", "chart": chart, "targetRevision": "1.0.0"}
            params.append(
                pytest.param(
                    Request("create", lambda _, s=source: application("app", s), "argocd.crdguard.io"),
                    id=f"{component.name}: an Application of chart {chart} is sent",
                )
            )
    for rule in sorted({r.crd: r for r in catalog.rules.values()}.values(), key=lambda r: r.crd):
        plural, group = rule.crd.split(".", 1)
        params.append(
            pytest.param(
                Request(
                    "create",
                    lambda _, g=group, k=rule.crd_kind, p=plural: catalogued_crd(g, k, p),
                    "crds.crdguard.io",
                ),
                id=f"creating the CRD {rule.crd} is sent",
            )
        )
    return params


@pytest.mark.parametrize("request_", catalog_requests())
def test_every_catalogued_component_and_crd_reaches_crdguard(
    url_release: Release, control_plane: ControlPlane, upstream: Path, request_: Request
) -> None:
    test_what_the_webhooks_send(url_release, control_plane, upstream, request_)


@pytest.mark.parametrize("request_", REQUESTS)
def test_what_the_webhooks_send(
    url_release: Release, control_plane: ControlPlane, upstream: Path, request_: Request
) -> None:
    result = request_.run(control_plane, upstream)
    if request_.sent_to is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, f"expected {request_.sent_to} to be called:\n{result.stdout}"
        assert f'failed calling webhook "{request_.sent_to}"' in result.stderr
        assert "connection refused" in result.stderr


def test_the_api_server_rejects_cel_that_does_not_compile(control_plane: ControlPlane, helm: Helm) -> None:
    # The other side of "the install proves the CEL compiles": a misspelt variable is refused.
    config = registered_config(helm.template(*MODES["url"]))
    config["metadata"]["name"] = "crdguard-cel-check"
    config["webhooks"][1]["matchConditions"][0]["expression"] = "has(objekt.spec)"
    result = control_plane.kubectl(
        "create", "--dry-run=server", "--filename=-", input=json.dumps(config), check=False
    )
    assert result.returncode != 0
    assert "compilation failed" in result.stderr
    assert "objekt" in result.stderr


def test_a_catalog_of_many_components_stays_within_the_api_servers_limits(
    control_plane: ControlPlane, helm: Helm, tmp_path: Path
) -> None:
    # 40 components of 5 images and 2 charts each, 200 CRDs: the matchConditions grow by list
    # entries, not conditions, and the API server accepts their CEL (compilation and cost).
    components = [
        {
            "name": f"gw{i}",
            "detect": {
                "images": [f"vendor{i}/controller-{j}" for j in range(5)],
                "labels": {"app.kubernetes.io/name": f"gw{i}"},
                "charts": [f"gw{i}", f"gw{i}-crds"],
            },
        }
        for i in range(40)
    ]
    rules = [
        {
            "id": f"gw{i % 40}-needs-kind{i}",
            "component": f"gw{i % 40}",
            "versions": ">=1.0.0",
            "crd": f"kind{i}s.example{i % 7}.example.com",
            "crdKind": f"Kind{i}",
            "requires": {"exists": True},
            "whenCRDMissing": "conflict",
            "failure": "crash",
            "explanation": "A generated rule.",
        }
        for i in range(200)
    ]
    catalog = tmp_path / "big.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "crdguard.io/v1alpha1",
                "kind": "CompatibilityCatalog",
                "components": components,
                "rules": rules,
            }
        )
    )
    config = registered_config(
        helm.template(*MODES["url"], "--set-file", f"catalog.extra.big\\.yaml={catalog}")
    )
    assert all(len(w["matchConditions"]) <= 64 for w in config["webhooks"])
    assert "controller-4" in config["webhooks"][1]["matchConditions"][0]["expression"]
    config["metadata"]["name"] = "crdguard-many-components"
    result = control_plane.kubectl(
        "create", "--dry-run=server", "--filename=-", input=json.dumps(config), check=False
    )
    assert result.returncode == 0, result.stderr
