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

from bench import apply_e2e, harness, payloads
from bench.harness import BenchError, Cores, LoadGen, Server
from bench.opa_data import opa_data
from webhook.catalogs import load_catalog

RESULTS = harness.BENCH_DIR / "results"
README = harness.BENCH_DIR / "README.md"
SERVERS = ("crdguard", "floor", "opa")
SCALE = {"crds": 5000, "deployments": 5000, "helmreleases": 1000}


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
        self.catalog = load_catalog()

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
        data = opa_data(payloads.scenario_objects(self.upstream), self.catalog)
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

    def start_servers(self) -> dict[str, Server]:
        servers = {
            "crdguard": harness.crdguard_server(
                harness.free_port(), self.cert_dir, self.work, self.cores, cluster=self.cluster_dir
            ),
            "floor": harness.floor_server(harness.free_port(), self.cert_dir, self.work, self.cores),
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
        mismatches = harness.compare_verdicts(passes["crdguard"], passes["opa"])
        verdicts = {v["file"]: v["allowed"] for v in passes["crdguard"]["verdicts"]}
        self.details["verdicts"] = {
            "crdguard_vs_opa_mismatches": mismatches,
            "denied": sorted(f for f, allowed in verdicts.items() if allowed is False),
            "payloads": len(verdicts),
        }
        if mismatches:
            raise BenchError(f"crdguard and OPA disagree: {mismatches}")
        log(f"  {len(verdicts)} payloads, {len(self.details['verdicts']['denied'])} denied, crdguard == OPA")

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
        curve: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for fraction in a.loads:
            rate = round(crdguard_max * fraction, 1)
            repeats = a.rounds if fraction == 0.5 else 1
            for name, server in servers.items():
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
        sizes = {}
        for cls, entries in payloads.iter_classes(self.manifest):
            sizes[cls] = sum(e["bytes"] for e in entries) / len(entries)
        smallest, largest = min(sizes, key=sizes.__getitem__), max(sizes, key=sizes.__getitem__)
        out: dict[str, Any] = {}
        for cls in dict.fromkeys([smallest, largest]):
            out[cls] = {"mean_bytes": round(sizes[cls])}
            for name, server in servers.items():
                report = self.load(
                    server, name, "closed", conns=self.args.conns,
                    duration=f"{self.args.class_duration}s", warmup="1s",
                    **{"class": cls},
                )  # fmt: skip
                out[cls][name] = {k: report[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}
                log(f"  class {cls} {name}: {report['rps']:.0f} rps")
        return out

    def scale(self) -> dict[str, Any]:
        """crdguard fed through the watch cache, with the scenario only and with a large cluster."""
        a = self.args
        states: dict[str, dict[str, Any]] = {}
        fakes: list[subprocess.Popen[bytes]] = []
        servers: dict[str, Server] = {}
        try:
            for label, counts in (("empty", dict.fromkeys(SCALE, 0)), ("large", SCALE)):
                kubeconfig = self.work / f"kubeconfig-{label}"
                port = harness.free_port()
                argv = [
                    sys.executable, "-m", "bench.fakeapi",
                    "--port", str(port), "--kubeconfig", str(kubeconfig),
                    *(f"--{k}={v}" for k, v in counts.items()),
                ]  # fmt: skip
                fake = subprocess.Popen(
                    self.cores.pin(argv, self.cores.loadgen),
                    stdout=subprocess.PIPE,
                    stderr=(self.work / f"fakeapi-{label}.log").open("w"),
                    env={**os.environ, "PYTHONPATH": str(harness.REPO_ROOT)},
                )
                fakes.append(fake)
                assert fake.stdout is not None
                line = fake.stdout.readline()
                if not line:
                    raise BenchError(f"fake API server ({label}) failed; see {self.work}/fakeapi-{label}.log")
                served = json.loads(line)["objects"]
                server = harness.crdguard_server(
                    harness.free_port(), self.cert_dir, self.work, self.cores, kubeconfig=kubeconfig
                )
                server.name = f"crdguard-{label}"
                started = time.monotonic()
                server.start(timeout=600)
                ingest = time.monotonic() - started
                time.sleep(2)
                state = json.loads(server.metrics_get("/state"))
                states[label] = {
                    "served_by_fake_api": served,
                    "held_by_crdguard": state["objects"],
                    "ready_after_seconds": round(ingest, 1),
                    "rss_mib_after_ingest": server.rss_mib(),
                }
                servers[label] = server
                log(
                    f"  {label}: ready after {ingest:.1f}s, "
                    f"RSS {states[label]['rss_mib_after_ingest']} MiB, {state['objects']}"
                )
            runs: dict[str, list[dict[str, Any]]] = {"empty": [], "large": []}
            for round_ in range(a.rounds):
                for label in ("empty", "large") if round_ % 2 == 0 else ("large", "empty"):
                    report = self.load(
                        servers[label],
                        "crdguard",
                        "closed",
                        conns=a.conns,
                        duration=f"{a.duration}s",
                        warmup="2s",
                    )
                    runs[label].append(report)
                    log(f"  scale round {round_ + 1}/{a.rounds} {label}: {report['rps']:.0f} rps")
            large = servers["large"]
            reviews = sum(r["requests"] for r in runs["large"])
            rss_samples = [{"reviews": reviews, "rss_mib": large.rss_mib()}]
            log(f"  sending {max(0, a.reviews - reviews)} more reviews to the large-state crdguard")
            chunk = max(1, a.reviews // 4)
            while reviews < a.reviews:
                report = self.load(
                    large, "crdguard", "closed", conns=a.conns, warmup="0s",
                    requests=min(chunk, a.reviews - reviews), duration="1000s", timeout=1200,
                )  # fmt: skip
                reviews += report["requests"]
                rss_samples.append({"reviews": reviews, "rss_mib": large.rss_mib()})
                log(f"  {reviews} reviews: RSS {rss_samples[-1]['rss_mib']} MiB")
            time.sleep(2)
            after = large.rss_mib()
            log(f"  RSS after {reviews} reviews: {after} MiB")
            return {
                "states": states,
                "empty_rps": median([r["rps"] for r in runs["empty"]]),
                "large_rps": median([r["rps"] for r in runs["large"]]),
                "runs": runs,
                "reviews_to_large": reviews,
                "rss_mib_samples_large": rss_samples,
                "rss_mib": {
                    "idle": states["empty"]["rss_mib_after_ingest"],
                    "large_state": states["large"]["rss_mib_after_ingest"],
                    "after_100k_reviews": after,
                },
            }
        finally:
            for server in servers.values():
                server.stop()
            for fake in fakes:
                fake.terminate()
                fake.wait(10)

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
            log("payload classes on their own: smallest and largest")
            self.details["classes"] = self.per_class(servers)
            self.details["rss_mib_static_scenario_after_load"] = {n: s.rss_mib() for n, s in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
        if not self.args.skip_scale:
            log(
                "scale: crdguard fed by list+watch, scenario only "
                "vs 5,000 CRDs + 5,000 Deployments + 1,000 HelmReleases"
            )
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


def summary(details: dict[str, Any]) -> dict[str, Any]:
    """latest.json: exactly the keys issue 4 lists. p50/p99 at 50% of crdguard's maximum load."""
    half = {
        name: next(p for p in details["latency"][name] if p["fraction_of_crdguard_max"] == 0.5)
        for name in SERVERS
    }
    out: dict[str, Any] = {}
    for name in SERVERS:
        out[name] = {
            "rps": details["throughput"][name]["rps"],
            "p50_ms": half[name]["p50_ms"],
            "p99_ms": half[name]["p99_ms"],
            "errors": details["errors"][name],
        }
    scale = details.get("scale")
    apply = details.get("apply") or {}
    out["ratios"] = {
        "crdguard_vs_floor_rps": round(out["crdguard"]["rps"] / out["floor"]["rps"], 3),
        "crdguard_vs_opa_rps": round(out["crdguard"]["rps"] / out["opa"]["rps"], 3),
        "opa_vs_crdguard_p99": round(out["opa"]["p99_ms"] / out["crdguard"]["p99_ms"], 3),
        "large_state_vs_empty_rps": round(scale["large_rps"] / scale["empty_rps"], 3) if scale else None,
        "apply_with_vs_without_webhook": round(apply["with_vs_without"], 3)
        if "with_vs_without" in apply
        else None,
    }
    out["rss_mib"] = (
        scale["rss_mib"] if scale else {"idle": None, "large_state": None, "after_100k_reviews": None}
    )
    return out


TARGETS = (
    ("crdguard_vs_floor_rps", ">=", 0.85),
    ("crdguard_vs_opa_rps", ">=", 1.0),
    ("opa_vs_crdguard_p99", ">=", 1.0),
    ("large_state_vs_empty_rps", ">=", 0.9),
    ("apply_with_vs_without_webhook", "<=", 1.15),
)


def _met(value: float | None, op: str, target: float) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if op == ">=" else value <= target
    return "met" if ok else "**missed**"


def markdown(result: dict[str, Any], details: dict[str, Any]) -> str:
    env = details["environment"]
    lines = [
        f"Last run: {env['started']}, {env['seconds']} s, OPA {env['opa']}, Python {env['python']}, "
        f"{env['cpus']} CPUs (load generator on CPU {env['pinned']['loadgen']}, each server on CPU "
        f"{env['pinned']['server']}); load average {env['load_average_at_start'][0]:.1f} at the start.",
        "",
        "| server | max rps (mix) | p50 ms at 50% load | p99 ms at 50% load | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in SERVERS:
        r = result[name]
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    lines += ["", "| ratio | value | target | |", "| --- | ---: | ---: | --- |"]
    for key, op, target in TARGETS:
        value = result["ratios"][key]
        shown = f"{value:.3f}" if value is not None else "n/a"
        lines.append(f"| `{key}` | {shown} | {op} {target} | {_met(value, op, target)} |")
    rss = result["rss_mib"]
    if rss["large_state"] is not None:
        growth = (rss["after_100k_reviews"] - rss["large_state"]) / rss["large_state"]
        lines += [
            "",
            "| RSS of `crdguard serve` (MiB) | value | target | |",
            "| --- | ---: | ---: | --- |",
            f"| idle (scenario only, synced) | {rss['idle']:.1f} | | |",
            "| large state (5,000 CRDs + 5,000 Deployments + 1,000 HelmReleases) "
            f"| {rss['large_state']:.1f} | <= 150 "
            f"| {'met' if rss['large_state'] <= 150 else '**missed**'} |",
            f"| after 100,000 reviews | {rss['after_100k_reviews']:.1f} ({growth:+.1%}) | within 5% "
            f"| {'met' if abs(growth) <= 0.05 else '**missed**'} |",
        ]
    classes = details.get("classes", {})
    if classes:
        lines += [
            "",
            "| payload class alone (max rps) | mean body | crdguard | floor | opa |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for cls, row in classes.items():
            lines.append(
                f"| {cls} | {row['mean_bytes'] / 1024:.0f} KiB | {row['crdguard']['rps']:.0f} "
                f"| {row['floor']['rps']:.0f} "
                f"| {row['opa']['rps']:.0f} |"
            )
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
        "Reproduce: `make bench` (about 12 minutes; writes bench/results/latest.json and docs/bench.png).",
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
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if 0.5 not in args.loads:
        parser.error("--loads must include 0.5 (the summary's p99 is taken there)")
    args.out.mkdir(parents=True, exist_ok=True)
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
