"""The benchmark: crdguard against the floor of its own stack and against OPA, on the same work.

Run it with ``make bench`` (bench/run.sh builds the load generator and OPA first).
Steps, all on 127.0.0.1, each server one process pinned to one core and the
load generator pinned to the other:

1. verdicts: every payload once through crdguard and OPA; they must agree;
2. maximum throughput, closed loop, the weighted mix, ``--rounds`` interleaved rounds;
3. latency at fixed offered loads (fractions of crdguard's maximum), open loop;
4. the smallest and the largest payload class on their own;
5. scale: ``crdguard serve --kubeconfig`` fed by bench/fakeapi.py, with the scenario
   only and with 5,000 CRDs + 5,000 Deployments + 1,000 HelmReleases more;
   RSS idle, after that state is ingested, and after 100,000 reviews;
6. end to end: ``kubectl apply --server-side`` of a CRD bundle with and without crdguard.

Writes bench/results/latest.json (the summary, exactly the keys of issue 4),
bench/results/details.json (every run), bench/results/latest.md (the table) and
refreshes the results section of bench/README.md. Medians across rounds; ratios
come from the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import apply_e2e, bigcluster, harness, payloads
from bench.catalog_serve import KGATEWAY_FILE, catalog_of
from bench.harness import BenchError, Cores, LoadGen, Server
from bench.opa_data import opa_data
from webhook.catalogs import default_catalog_files, load_catalog

RESULTS = harness.BENCH_DIR / "results"
README = harness.BENCH_DIR / "README.md"
# crdguard: as shipped, the packaged catalog; crdguard-kgateway: only kgateway's catalog file, the
# rules bench/opa/crdguard.rego implements; floor: the stack and a msgspec decode of request.uid;
# floor-json-loads: the stack and json.loads of the whole review.
SERVERS = ("crdguard", "crdguard-kgateway", "floor", "floor-json-loads", "opa")
CURVE_SERVERS = ("crdguard", "floor", "opa")  # latency against offered load


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.cores = Cores.pick()
        self.details: dict[str, Any] = {
            "errors": dict.fromkeys(SERVERS, 0),
            "dropped": dict.fromkeys(SERVERS, 0),
        }
        # crdguard judges with the packaged catalog (every component); crdguard-kgateway and OPA with
        # kgateway's file alone, the rules bench/opa/crdguard.rego implements.
        self.catalog = load_catalog()
        self.kgateway_catalog = catalog_of([KGATEWAY_FILE])

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        env = harness.tool_env()
        loadgen = Path(env["CRDGUARD_LOADGEN"])
        if not os.access(loadgen, os.X_OK):
            raise BenchError("the load generator is not built: bash bench/tools.sh loadgen")
        self.opa = Path(env["CRDGUARD_OPA"])
        if not os.access(self.opa, os.X_OK):
            raise BenchError("OPA is not built: bash bench/tools.sh opa")
        self.opa_version = env["CRDGUARD_OPA_VERSION"]
        self.upstream_root = payloads.upstream_dir()
        self.upstream = payloads.Upstream.load(self.upstream_root)
        self.cert_dir = self.work / "certs"
        harness.make_certs(self.cert_dir)
        self.payload_dir = self.work / "payloads"
        self.manifest = payloads.write_payloads(payloads.build_payloads(self.upstream), self.payload_dir)
        self.cluster_dir = self.work / "cluster"
        payloads.write_scenario(self.upstream, self.cluster_dir)
        self.opa_data_dir = self.work / "opa-data"
        self.opa_data_dir.mkdir()
        data = opa_data(payloads.scenario_objects(self.upstream), self.kgateway_catalog)
        (self.opa_data_dir / "data.json").write_text(json.dumps(data))
        self.loadgen = LoadGen(loadgen, self.payload_dir, self.cert_dir / "ca.crt", self.cores)
        self.details["environment"] = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "pinned": {"loadgen": self.cores.loadgen, "server": self.cores.server},
            "opa": self.opa_version,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "load_average_at_start": os.getloadavg(),
        }
        self.details["payloads"] = [
            {k: e[k] for k in ("file", "class", "weight", "bytes", "operation", "kind")}
            for e in self.manifest["payloads"]
        ]
        self.details["class_shares_percent"] = payloads.CLASS_SHARES
        self.denials_dir = self.work / "payloads-denials"
        self.denials_manifest = payloads.write_payloads(
            payloads.build_denials(self.upstream), self.denials_dir, payloads.DENIAL_SHARES
        )
        self.denials_loadgen = LoadGen(loadgen, self.denials_dir, self.cert_dir / "ca.crt", self.cores)
        self.details["catalogs"] = {
            "full": {
                "source": "packaged",
                "files": len(default_catalog_files()),
                "components": len(self.catalog.components),
                "rules": len(self.catalog.rules),
            },
            "kgateway_only": {
                "file": KGATEWAY_FILE,
                "components": len(self.kgateway_catalog.components),
                "rules": len(self.kgateway_catalog.rules),
            },
        }

    def start_servers(self) -> dict[str, Server]:
        servers = {
            "crdguard": harness.crdguard_server(
                harness.free_port(),
                self.cert_dir,
                self.work,
                self.cores,
                cluster=self.cluster_dir,
            ),
            "crdguard-kgateway": harness.crdguard_server(
                harness.free_port(),
                self.cert_dir,
                self.work,
                self.cores,
                cluster=self.cluster_dir,
                catalog_files=[Path(KGATEWAY_FILE)],
                name="crdguard-kgateway",
            ),
            "floor": harness.floor_server(harness.free_port(), self.cert_dir, self.work, self.cores),
            "floor-json-loads": harness.floor_server(
                harness.free_port(), self.cert_dir, self.work, self.cores, decode="json-loads"
            ),
            "opa": harness.opa_server(
                self.opa, harness.free_port(), self.cert_dir, self.opa_data_dir, self.work, self.cores
            ),
        }
        for server in servers.values():
            server.start()
        return servers

    # -- measurements -----------------------------------------------------------------------------
    def load(self, server: Server, name: str, mode: str, **options: Any) -> dict[str, Any]:
        report = self.loadgen.run(server.url, mode, **options)
        self.details["errors"][name] = self.details["errors"].get(name, 0) + report["errors"]
        self.details["dropped"][name] = self.details["dropped"].get(name, 0) + report.get("dropped", 0)
        if report["errors"]:
            log(f"  {name}: {report['errors']} errors, e.g. {report['error_samples'][:2]}")
        return report

    def verify(self, servers: dict[str, Server]) -> None:
        log("verdicts: every payload once through each server")
        passes = {name: self.loadgen.verdicts(s.url) for name, s in servers.items()}
        for name, report in passes.items():
            self.details["errors"][name] += report["errors"]
        # OPA implements kgateway's rules only: it is held to the crdguard that has only those.
        mismatches = harness.compare_verdicts(passes["crdguard-kgateway"], passes["opa"])
        verdicts = {v["file"]: v["allowed"] for v in passes["crdguard"]["verdicts"]}
        self.details["verdicts"] = {
            "crdguard_vs_opa_mismatches": mismatches,
            "full_vs_kgateway_only_differences": harness.compare_verdicts(
                passes["crdguard"], passes["crdguard-kgateway"]
            ),
            "denied": sorted(f for f, allowed in verdicts.items() if allowed is False),
            "payloads": len(verdicts),
        }
        if mismatches:
            raise BenchError(f"crdguard and OPA disagree: {mismatches}")
        log(
            f"  {len(verdicts)} payloads, {len(self.details['verdicts']['denied'])} denied, "
            "crdguard (kgateway rules) == OPA"
        )

    def throughput(self, servers: dict[str, Server]) -> dict[str, dict[str, Any]]:
        a = self.args
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for name, server in servers.items():  # warm every server (JIT-free, but caches and pools)
            self.load(server, name, "closed", conns=a.conns, duration="2s", warmup="1s")
        for round_ in range(a.rounds):
            names = list(servers)[round_ % len(servers) :] + list(servers)[: round_ % len(servers)]
            for name in names:
                report = self.load(
                    servers[name], name, "closed", conns=a.conns, duration=f"{a.duration}s", warmup="2s"
                )
                runs[name].append(report)
                log(f"  max throughput round {round_ + 1}/{a.rounds} {name}: {report['rps']:.0f} rps")
        return {
            name: {
                "rps": median([r["rps"] for r in reports]),
                "p50_ms": median([r["p50_ms"] for r in reports]),
                "p99_ms": median([r["p99_ms"] for r in reports]),
                "runs": reports,
            }
            for name, reports in runs.items()
        }

    def latency(self, servers: dict[str, Server], crdguard_max: float) -> dict[str, Any]:
        a = self.args
        curve: dict[str, list[dict[str, Any]]] = {name: [] for name in CURVE_SERVERS}
        for fraction in a.loads:
            rate = round(crdguard_max * fraction, 1)
            repeats = a.rounds if fraction == 0.5 else 1
            for name in CURVE_SERVERS:
                server = servers[name]
                reports = [
                    self.load(
                        server,
                        name,
                        "open",
                        rate=rate,
                        conns=a.open_conns,
                        duration=f"{a.open_duration}s",
                        warmup="2s",
                    )
                    for _ in range(repeats)
                ]
                point = {
                    "fraction_of_crdguard_max": fraction,
                    "offered_rps": rate,
                    "achieved_rps": median([r["rps"] for r in reports]),
                    "p50_ms": median([r["p50_ms"] for r in reports]),
                    "p90_ms": median([r["p90_ms"] for r in reports]),
                    "p99_ms": median([r["p99_ms"] for r in reports]),
                    "max_ms": max(r["max_ms"] for r in reports),
                    "errors": sum(r["errors"] for r in reports),
                    "dropped": sum(r["dropped"] for r in reports),
                    "repeats": repeats,
                }
                curve[name].append(point)
                log(
                    f"  {name} at {rate:.0f} rps ({fraction:.0%}): "
                    f"p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms"
                )
        return curve

    def per_class(self, servers: dict[str, Server]) -> dict[str, Any]:
        """Every class alone on crdguard and the floor; the smallest and largest on every server."""
        sizes = {}
        for cls, entries in payloads.iter_classes(self.manifest):
            sizes[cls] = sum(e["bytes"] for e in entries) / len(entries)
        ends = {min(sizes, key=sizes.__getitem__), max(sizes, key=sizes.__getitem__)}
        out: dict[str, Any] = {}
        for cls in sorted(sizes, key=sizes.__getitem__):
            out[cls] = {"mean_bytes": round(sizes[cls])}
            for name, server in servers.items():
                if name not in ("crdguard", "floor") and cls not in ends:
                    continue
                report = self.load(
                    server, name, "closed", conns=self.args.conns,
                    duration=f"{self.args.class_duration}s", warmup="1s",
                    **{"class": cls},
                )  # fmt: skip
                out[cls][name] = {k: report[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}
                log(f"  class {cls} {name}: {report['rps']:.0f} rps")
        return out

    def denials(self, crdguard: Server) -> dict[str, Any]:
        """Denied changes (with their fixes) against allowed twins of the same objects, on crdguard."""
        a = self.args
        passes = self.denials_loadgen.verdicts(crdguard.url)
        self.details["errors"]["crdguard"] += passes["errors"]
        wrong = [v["file"] for v in passes["verdicts"] if v["allowed"] is not (v["file"] in self._twins())]
        if wrong:
            raise BenchError(f"denials run: unexpected verdicts on {wrong}")
        runs: dict[str, list[dict[str, Any]]] = {"denied": [], "allowed-twin": []}
        for round_ in range(a.rounds):
            order = ("denied", "allowed-twin") if round_ % 2 == 0 else ("allowed-twin", "denied")
            for cls in order:
                report = self.denials_loadgen.run(
                    crdguard.url, "closed", conns=a.conns, duration=f"{a.class_duration}s", warmup="1s",
                    **{"class": cls},
                )  # fmt: skip
                self.details["errors"]["crdguard"] += report["errors"]
                runs[cls].append(report)
                log(f"  denials round {round_ + 1}/{a.rounds} {cls}: {report['rps']:.0f} rps")
        denied_max = median([r["rps"] for r in runs["denied"]])
        rate = round(denied_max * 0.5, 1)
        half = [
            self.denials_loadgen.run(
                crdguard.url, "open", rate=rate, conns=a.open_conns, duration=f"{a.open_duration}s",
                warmup="2s", **{"class": "denied"},
            )
            for _ in range(a.rounds)
        ]  # fmt: skip
        for report in half:
            self.details["errors"]["crdguard"] += report["errors"]
        p99 = median([r["p99_ms"] for r in half])
        log(f"  denied at {rate:.0f} rps (50% of its max): p99 {p99} ms")
        sizes = {
            cls: round(statistics.mean(e["bytes"] for e in entries))
            for cls, entries in payloads.iter_classes(self.denials_manifest)
        }
        return {
            "denied_rps": denied_max,
            "allowed_twin_rps": median([r["rps"] for r in runs["allowed-twin"]]),
            "mean_bytes": sizes,
            "denied_at_50pct": {
                "offered_rps": rate,
                "p50_ms": median([r["p50_ms"] for r in half]),
                "p99_ms": p99,
            },
            "runs": runs,
        }

    def _twins(self) -> set[str]:
        return {e["file"] for e in self.denials_manifest["payloads"] if e["class"] == "allowed-twin"}

    def scale(self) -> dict[str, Any]:
        """crdguard following real kube-apiservers by list+watch: the scenario only, and a big cluster."""
        a = self.args
        bins = apply_e2e.kube_bin_dir()
        if bins is None:
            return {"skipped": "control-plane binaries not built (bash hack/kube-tools.sh k8s)"}
        plane = apply_e2e._cluster_module().ControlPlane
        counts = bigcluster.Counts(
            deployments=a.scale_deployments, controllers=min(200, a.scale_deployments), crds=a.scale_crds,
            helmreleases=a.scale_helmreleases, applications=a.scale_applications,
        )  # fmt: skip
        out: dict[str, Any] = {"described": counts.describe()}
        planes = []
        servers: list[Server] = []

        def crdguard(label: str, kubeconfig: Path, timeout: float = 120) -> tuple[Server, float]:
            server = harness.crdguard_server(
                harness.free_port(), self.cert_dir, self.work, self.cores,
                kubeconfig=kubeconfig, name=f"crdguard-{label}",
            )  # fmt: skip
            servers.append(server)
            started = time.monotonic()
            server.start(timeout=timeout)
            return server, time.monotonic() - started

        try:
            clients = []
            for _ in ("empty", "large"):
                # No compaction by the API server during the run: a listing of tens of thousands of
                # Deployments on the loaded machine outlived the 5-minute window ("continue parameter
                # is too old"). Both servers alike.
                cp = plane(bins, startup_timeout=180, extra_apiserver_args=["--etcd-compaction-interval=0"])
                planes.append(cp)
                cp.start()
                client = bigcluster.Client(
                    "127.0.0.1", cp.apiserver_port, cp._admin_ssl_context(), a.scale_clients
                )
                bigcluster.load_scenario(client, self.upstream)
                clients.append(client)
            small, big = planes
            empty, _ = crdguard("empty", small.kubeconfig)
            time.sleep(2)
            out["rss_idle"] = empty.rss_mib()
            growing, _ = crdguard("growing", big.kubeconfig)
            cost: list[dict[str, Any]] = []

            def checkpoint(deployments: int) -> None:
                time.sleep(2)  # let the watch catch up before timing reviews
                report = self.load(
                    growing, "crdguard", "closed", conns=a.conns, duration=f"{a.class_duration}s", warmup="1s"
                )
                held = json.loads(growing.metrics_get("/state"))["objects"]
                cost.append({
                    "deployments_created": deployments, "held_by_crdguard": held, "rps": report["rps"],
                    "us_per_review": round(1e6 / report["rps"], 1) if report["rps"] else None,
                    "p99_ms": report["p99_ms"], "rss_mib": growing.rss_mib(),
                })  # fmt: skip
                log(f"  {deployments} Deployments: {report['rps']:.0f} rps, RSS {cost[-1]['rss_mib']} MiB")

            log(f"  loading {counts.describe()} ({a.scale_clients} parallel clients)")
            out["setup"] = bigcluster.load_big(
                clients[1], self.upstream, counts, checkpoint, budget=a.scale_budget
            )
            log(f"  loaded in {out['setup']['seconds']} s ({out['setup']['objects_per_second']} objects/s)")
            if out["setup"]["failed"]:
                log(f"  {out['setup']['failed']} creations failed, e.g. {out['setup']['failures'][:2]}")
            out["cost_by_size"] = cost
            growing.stop()
            # Once: on a loaded 2-core machine one listing of 50,000 Deployments took kubectl over 9 minutes.
            started = time.monotonic()
            try:
                subprocess.run(
                    [str(bins / "kubectl"), "--kubeconfig", str(big.kubeconfig), "get", "deploy,crd", "-A",
                     "-o", "json", "--request-timeout=0"],
                    stdout=subprocess.DEVNULL, check=True, timeout=a.kubectl_timeout,
                )  # fmt: skip
                out["kubectl_list_seconds"] = round(time.monotonic() - started, 2)
            except subprocess.TimeoutExpired:
                out["kubectl_list_seconds"] = None
                out["kubectl_list_over_seconds"] = a.kubectl_timeout
                log(f"  kubectl get deploy,crd -A -o json did not finish in {a.kubectl_timeout:.0f} s")
            except subprocess.CalledProcessError:
                # Seen on the loaded machine: the listing outlived the API server's compaction window
                # and its continue token expired (410). kubectl failed after that long.
                out["kubectl_list_seconds"] = None
                out["kubectl_list_over_seconds"] = round(time.monotonic() - started, 2)
                log(f"  kubectl get deploy,crd -A -o json failed after {out['kubectl_list_over_seconds']} s")
            large, ready = crdguard("large", big.kubeconfig, timeout=900)
            out["ready_seconds"] = round(ready, 2)
            listed = out["kubectl_list_seconds"]
            # Unfinished listing: the ratio is at most ready / the time kubectl was given.
            out["ready_vs_kubectl_list"] = round(ready / (listed or out["kubectl_list_over_seconds"]), 3)
            log(f"  crdguard ready after {ready:.1f} s; kubectl get deploy,crd -A: {listed} s")
            time.sleep(2)
            out["held_by_crdguard"] = json.loads(large.metrics_get("/state"))["objects"]
            rss_large = large.rss_mib()
            runs: dict[str, list[dict[str, Any]]] = {"empty": [], "large": []}
            by_label = {"empty": empty, "large": large}
            for round_ in range(a.rounds):
                for label in ("empty", "large") if round_ % 2 == 0 else ("large", "empty"):
                    report = self.load(
                        by_label[label], "crdguard", "closed", conns=a.conns,
                        duration=f"{a.duration}s", warmup="2s",
                    )  # fmt: skip
                    runs[label].append(report)
                    log(f"  scale round {round_ + 1}/{a.rounds} {label}: {report['rps']:.0f} rps")
            reviews = sum(r["requests"] for r in runs["large"])
            warm = large.rss_mib()
            out["warmup_reviews"] = reviews
            samples = [{"reviews": reviews, "rss_mib": warm}]
            log(f"  sending {max(0, a.reviews - reviews)} more reviews to the large-state crdguard")
            chunk = max(1, a.reviews // 4)
            while reviews < a.reviews:
                report = self.load(
                    large, "crdguard", "closed", conns=a.conns, warmup="0s",
                    requests=min(chunk, a.reviews - reviews), duration="1000s", timeout=1200,
                )  # fmt: skip
                reviews += report["requests"]
                samples.append({"reviews": reviews, "rss_mib": large.rss_mib()})
                log(f"  {reviews} reviews: RSS {samples[-1]['rss_mib']} MiB")
            time.sleep(2)
            after = large.rss_mib()
            out.update(
                empty_rps=median([r["rps"] for r in runs["empty"]]),
                large_rps=median([r["rps"] for r in runs["large"]]),
                runs=runs,
                reviews_to_large=reviews,
                rss_mib_samples_large=samples,
                rss_mib={"idle": out["rss_idle"], "large_state": rss_large, "after_warmup": warm,
                         "after_100k_reviews": after},
                audit={"measured": False, "why": "the conflict gauge lag is not measured yet"},
            )  # fmt: skip
            return out
        finally:
            for server in servers:
                server.stop()
            for cp in planes:
                cp.close()

    # -- the whole run ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        step(self.prepare, "setting up: certificates, payloads, scenario state, OPA data")
        servers = self.start_servers()
        try:
            self.details["rss_mib_static_scenario_idle"] = {n: s.rss_mib() for n, s in servers.items()}
            self.verify(servers)
            log(f"maximum throughput: closed loop, {self.args.conns} connections, {self.args.rounds} rounds")
            self.details["throughput"] = self.throughput(servers)
            crdguard_max = self.details["throughput"]["crdguard"]["rps"]
            log(f"latency at fixed offered loads (open loop), crdguard max {crdguard_max:.0f} rps")
            self.details["latency"] = self.latency(servers, crdguard_max)
            log("payload classes on their own: every class on crdguard and the floor")
            self.details["classes"] = self.per_class(servers)
            log("denials: denied changes with their fixes vs allowed twins, on crdguard")
            self.details["denials"] = self.denials(servers["crdguard"])
            self.details["rss_mib_static_scenario_after_load"] = {n: s.rss_mib() for n, s in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
        if not self.args.skip_scale:
            log("scale: crdguard following real kube-apiservers, the scenario only and a big cluster")
            self.details["scale"] = self.scale()
        if not self.args.skip_e2e:
            log(
                "end to end: kubectl apply --server-side of Gateway API v1.4.0 experimental, "
                "with and without crdguard"
            )
            self.details["apply"] = apply_e2e.run(
                self.upstream_root,
                self.cluster_dir,
                self.cert_dir,
                self.work,
                sorted(self.catalog.crd_names),
                rounds=self.args.apply_rounds,
                log=log,
            )
        self.details["environment"]["seconds"] = round(time.monotonic() - started)
        self.details["environment"]["load_average_at_end"] = os.getloadavg()
        return self.details


def step(fn: Callable[[], None], what: str) -> None:
    log(what)
    fn()


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summary(details: dict[str, Any]) -> dict[str, Any]:
    """latest.json: issue 4's keys and issue 10's. p50/p99 at 50% of crdguard's maximum load."""
    half = {
        name: next(p for p in details["latency"][name] if p["fraction_of_crdguard_max"] == 0.5)
        for name in CURVE_SERVERS
    }
    out: dict[str, Any] = {}
    for name in SERVERS:
        out[name] = {"rps": details["throughput"][name]["rps"], "errors": details["errors"][name]}
        if name in half:
            out[name].update(p50_ms=half[name]["p50_ms"], p99_ms=half[name]["p99_ms"])
    classes = details.get("classes", {})
    per_class = {
        cls: _ratio(row["crdguard"]["rps"], row["floor"]["rps"])
        for cls, row in classes.items()
        if "crdguard" in row and "floor" in row
    }
    scale = details.get("scale") or {}
    apply = details.get("apply") or {}
    denials = details.get("denials") or {}
    out["ratios"] = {
        "crdguard_vs_floor_rps": _ratio(out["crdguard"]["rps"], out["floor"]["rps"]),
        "crdguard_vs_floor_rps_min_class": min(
            (v for v in per_class.values() if v is not None), default=None
        ),
        "crdguard_vs_floor_rps_per_class": per_class,
        "crdguard_vs_floor_json_loads_rps": _ratio(out["crdguard"]["rps"], out["floor-json-loads"]["rps"]),
        "full_catalog_vs_kgateway_only_rps": _ratio(out["crdguard"]["rps"], out["crdguard-kgateway"]["rps"]),
        "denied_vs_allowed_rps": _ratio(denials.get("denied_rps"), denials.get("allowed_twin_rps")),
        # OPA implements kgateway's rules only: compared with the crdguard that has only those.
        "crdguard_vs_opa_rps": _ratio(out["crdguard-kgateway"]["rps"], out["opa"]["rps"]),
        "opa_vs_crdguard_p99": _ratio(out["opa"]["p99_ms"], out["crdguard"]["p99_ms"]),
        "ready_vs_kubectl_list": scale.get("ready_vs_kubectl_list"),
        "large_state_vs_empty_rps": _ratio(scale.get("large_rps"), scale.get("empty_rps")),
        "apply_with_vs_without_webhook": round(apply["with_vs_without"], 3)
        if "with_vs_without" in apply
        else None,
    }
    out["latency_ms"] = {"denied_p99_at_50pct": (denials.get("denied_at_50pct") or {}).get("p99_ms")}
    out["rss_mib"] = scale.get("rss_mib") or {"idle": None, "large_state": None, "after_100k_reviews": None}
    out["audit"] = scale.get("audit") or {"measured": False}
    out["catalogs"] = details.get("catalogs")
    setup = scale.get("setup") or {}
    # What was measured: the big cluster's counts as asked, and what the API server got.
    out["scale"] = {
        "asked": scale.get("described"),
        "objects_created": setup.get("objects"),
        "deployments_created": max(
            (c["deployments_created"] for c in scale.get("cost_by_size", [])), default=None
        ),
        "skipped_over_budget": setup.get("skipped_over_budget"),
        "held_by_crdguard": scale.get("held_by_crdguard"),
        "kubectl_list_seconds": scale.get("kubectl_list_seconds"),
        "crdguard_ready_seconds": scale.get("ready_seconds"),
    }
    out["crdguard"]["errors"] = details["errors"]["crdguard"]
    return out


TARGETS = (
    ("crdguard_vs_floor_rps", ">=", 0.90),
    ("crdguard_vs_floor_rps_min_class", ">=", 0.80),
    ("full_catalog_vs_kgateway_only_rps", ">=", 0.95),
    ("denied_vs_allowed_rps", ">=", 0.5),
    ("crdguard_vs_opa_rps", ">=", 1.0),
    ("opa_vs_crdguard_p99", ">=", 1.0),
    ("ready_vs_kubectl_list", "<=", 2.0),
    ("large_state_vs_empty_rps", ">=", 0.9),
    ("apply_with_vs_without_webhook", "<=", 1.15),
)


def _met(value: float | None, op: str, target: float) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if op == ">=" else value <= target
    return "met" if ok else "**missed**"


def _cell(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown(result: dict[str, Any], details: dict[str, Any]) -> str:
    env = details["environment"]
    catalogs = details.get("catalogs") or {}
    full = catalogs.get("full") or {}
    lines = [
        f"Last run: {env['started']}, {env['seconds']} s, OPA {env['opa']}, Python {env['python']}, "
        f"{env['cpus']} CPUs (load generator on CPU {env['pinned']['loadgen']}, each server on CPU "
        f"{env['pinned']['server']}); load average {env['load_average_at_start'][0]:.1f} at the start, "
        f"{env['load_average_at_end'][0]:.1f} at the end.",
        "",
        f"Full catalog: {full.get('source')}, {full.get('components')} components, "
        f"{full.get('rules')} rules; kgateway only: {catalogs.get('kgateway_only', {}).get('rules')} rules.",
        "",
        "| server | max rps (mix) | p50 ms at 50% load | p99 ms at 50% load | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in SERVERS:
        r = result[name]
        p50, p99 = _cell(r.get("p50_ms")), _cell(r.get("p99_ms"))
        lines.append(f"| {name} | {r['rps']:.0f} | {p50} | {p99} | {r['errors']} |")
    lines += ["", "| ratio | value | target | |", "| --- | ---: | ---: | --- |"]
    for key, op, target in TARGETS:
        value = result["ratios"][key]
        lines.append(f"| `{key}` | {_cell(value, '.3f')} | {op} {target} | {_met(value, op, target)} |")
    denied_p99 = result["latency_ms"]["denied_p99_at_50pct"]
    lines.append(
        f"| `latency_ms.denied_p99_at_50pct` | {_cell(denied_p99)} | <= 25 | {_met(denied_p99, '<=', 25)} |"
    )
    audit = result.get("audit") or {}
    lines.append(
        "| continuous audit current within 2 s at 50 changes/s | "
        + ("n/a | <= 2 | **not measured** (no lag measurement yet) |" if not audit.get("measured") else
           f"{audit['lag_p99_s']:.2f} s | <= 2 | {_met(audit['lag_p99_s'], '<=', 2)} |")
    )  # fmt: skip
    rss = result["rss_mib"]
    scale = details.get("scale") or {}
    if rss.get("large_state") is not None:
        warm = rss["after_warmup"]
        growth = (rss["after_100k_reviews"] - warm) / warm
        lines += [
            "",
            "| RSS of `crdguard serve` (MiB) | value | target | |",
            "| --- | ---: | ---: | --- |",
            f"| idle (scenario only, synced) | {rss['idle']:.1f} | | |",
            f"| large state ({scale.get('described', '')}), synced | {rss['large_state']:.1f} | <= 150 "
            f"| {_met(rss['large_state'], '<=', 150)} |",
            f"| after warm-up ({scale.get('warmup_reviews', 0):,} reviews) | {warm:.1f} | | |",
            f"| after {scale.get('reviews_to_large', 0):,} reviews | {rss['after_100k_reviews']:.1f} "
            f"({growth:+.1%}) | within 5% | {_met(abs(growth), '<=', 0.05)} |",
        ]
    if scale.get("setup"):
        st = scale["setup"]
        lines += [
            "",
            f"Big cluster on a real kube-apiserver: {scale.get('described')}; "
            f"created in {st['seconds']:.0f} s "
            f"({st['objects_per_second']:.0f} objects/s, {st['clients']} parallel clients"
            + (
                f"; {st['skipped_over_budget']:,} objects not created: the {st['budget_seconds']:.0f} s "
                "budget ran out"
                if st.get("skipped_over_budget")
                else ""
            )
            + "). "
            f"crdguard ready after {scale['ready_seconds']:.1f} s; "
            "`kubectl get deploy,crd -A -o json > /dev/null` took "
            + (
                f"{scale['kubectl_list_seconds']:.1f} s."
                if scale.get("kubectl_list_seconds") is not None
                else f"more than {scale.get('kubectl_list_over_seconds', 0):.0f} s (timed out or failed)."
            ),
        ]
    classes = details.get("classes", {})
    if classes:
        lines += [
            "",
            "| payload class alone (max rps) | mean body | crdguard | floor | crdguard / floor "
            "| floor-json-loads | opa |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for cls, row in classes.items():

            def rps(name: str, row: dict[str, Any] = row) -> str:
                return f"{row[name]['rps']:.0f}" if name in row else ""

            ratio = result["ratios"]["crdguard_vs_floor_rps_per_class"].get(cls)
            lines.append(
                f"| {cls} | {row['mean_bytes'] / 1024:.0f} KiB | {rps('crdguard')} | {rps('floor')} "
                f"| {_cell(ratio, '.3f')} | {rps('floor-json-loads')} | {rps('opa')} |"
            )
    denials = details.get("denials") or {}
    if denials:
        sizes = denials["mean_bytes"]
        at_half = denials["denied_at_50pct"]
        lines += [
            "",
            f"Denials (crdguard, closed loop): denied changes {denials['denied_rps']:.0f} rps "
            f"(mean body {sizes['denied'] / 1024:.0f} KiB), their allowed twins "
            f"{denials['allowed_twin_rps']:.0f} rps ({sizes['allowed-twin'] / 1024:.0f} KiB); denied at "
            f"{at_half['offered_rps']:.0f} rps (50% of its max): "
            f"p50 {at_half['p50_ms']:.2f} ms, p99 {at_half['p99_ms']:.2f} ms.",
        ]
    apply = details.get("apply") or {}
    if "median_seconds" in apply:
        m = apply["median_seconds"]
        lines += [
            "",
            "`kubectl apply --server-side` of Gateway API v1.4.0 experimental (12 CRDs), "
            f"medians of {apply['rounds']} rounds: {m['without']:.2f} s without crdguard, "
            f"{m['matchConditions']:.2f} s registered as the chart does "
            f"(matchConditions: {apply['reviews_per_apply']['matchConditions']:.0f} review per apply), "
            f"{m['every-crd']:.2f} s with every CRD reviewed "
            f"({apply['reviews_per_apply']['every-crd']:.0f} reviews); paired per-round ratios "
            f"{apply['with_vs_without']:.3f} and {apply['every_crd_vs_without']:.3f}.",
        ]
    lines += [
        "",
        "Reproduce: `make bench` (writes bench/results/latest.json, docs/bench.png, docs/bench-scale.png).",
    ]
    return "\n".join(lines) + "\n"


def update_readme(section: str) -> None:
    start, end = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
    if not README.exists():
        return
    text = README.read_text()
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        README.write_text(f"{head}{start}\n{section}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each throughput run (medians)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of each throughput run")
    parser.add_argument("--open-duration", type=float, default=8, help="seconds of each fixed-rate run")
    parser.add_argument("--class-duration", type=float, default=5, help="seconds of each per-class run")
    parser.add_argument("--conns", type=int, default=8, help="connections in closed-loop runs")
    parser.add_argument("--open-conns", type=int, default=32, help="connection pool of fixed-rate runs")
    parser.add_argument("--loads", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--reviews", type=int, default=100_000, help="reviews before the last RSS reading")
    parser.add_argument("--apply-rounds", type=int, default=9)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--scale-deployments", type=int, default=50_000)
    parser.add_argument("--scale-crds", type=int, default=3_000)
    parser.add_argument("--scale-helmreleases", type=int, default=2_000)
    parser.add_argument("--scale-applications", type=int, default=2_000)
    parser.add_argument("--kubectl-timeout", type=float, default=1800, help="seconds for the listing")
    parser.add_argument("--scale-budget", type=float, default=900, help="seconds allowed to load it")
    parser.add_argument(
        "--scale-clients", type=int, default=8, help="parallel clients loading the big cluster"
    )
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--from-details", type=Path, help="only summarise a saved details.json again (no measurement)"
    )
    args = parser.parse_args()
    if 0.5 not in args.loads:
        parser.error("--loads must include 0.5 (the summary's p99 is taken there)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_details:
        details = json.loads(args.from_details.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="crdguard-bench-") as tmp:
            try:
                details = Bench(args, Path(tmp)).run()
            except BenchError as exc:
                log(f"benchmark failed: {exc}")
                return 1
    result = summary(details)
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "details.json").write_text(json.dumps(details, indent=1) + "\n")
    section = markdown(result, details)
    (args.out / "latest.md").write_text(section)
    if args.out == RESULTS:
        update_readme(section)
    print(section)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
