"""docs/bench.png and docs/bench-scale.png from bench/results/details.json.

bench.png: latency against offered load (crdguard, the floor, OPA) and every server's maximum
throughput; bench-scale.png: the cost of one review against the size of the cluster crdguard
follows (measured while the big cluster was loaded into a real kube-apiserver).

Needs matplotlib (the ``bench`` extra); run by bench/run.sh after bench/run.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO_ROOT = Path(__file__).resolve().parents[1]
COLORS = {
    "crdguard": "#1f77b4",
    "crdguard-kgateway": "#17becf",
    "floor": "#7f7f7f",
    "floor-json-loads": "#bcbd22",
    "opa": "#d62728",
}


def plot(details: dict, out: Path) -> None:
    fig, (curve, bars) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    for name, points in details["latency"].items():
        x = [p["offered_rps"] for p in points]
        curve.plot(x, [p["p99_ms"] for p in points], "o-", color=COLORS[name], label=f"{name} p99")
        curve.plot(
            x, [p["p50_ms"] for p in points], "s--", color=COLORS[name], alpha=0.6, label=f"{name} p50"
        )
    curve.set_yscale("log")
    curve.set_xlabel("offered load (AdmissionReviews/s, weighted mix, open loop)")
    curve.set_ylabel("latency (ms, log scale)")
    curve.set_title("Latency against offered load (one core per server)")
    curve.grid(True, which="both", alpha=0.3)
    curve.legend(fontsize=8, ncol=3)
    names = list(details["throughput"])
    values = [details["throughput"][n]["rps"] for n in names]
    bars.bar(names, values, color=[COLORS[n] for n in names])
    bars.tick_params(axis="x", labelrotation=30, labelsize=7)
    for i, v in enumerate(values):
        bars.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=9)
    bars.set_title("Maximum throughput (closed loop)")
    bars.set_ylabel("AdmissionReviews/s")
    env = details["environment"]
    fig.text(
        0.01,
        0.01,
        f"crdguard benchmark {env['started']} · OPA {env['opa']} · Python {env['python']}",
        fontsize=7,
        alpha=0.7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def plot_scale(details: dict, out: Path) -> bool:
    """Microseconds per review (closed loop, the mix) against the objects crdguard holds."""
    points = (details.get("scale") or {}).get("cost_by_size") or []
    if not points:
        return False
    fig, cost = plt.subplots(figsize=(7, 4))
    x = [p["deployments_created"] for p in points]
    cost.plot(x, [p["us_per_review"] for p in points], "o-", color=COLORS["crdguard"], label="µs per review")
    cost.set_xlabel(
        f"Deployments in the cluster (besides: {details['scale']['described'].split(', ', 1)[1]})"
    )
    cost.set_ylabel("µs per review (1 / max rps, the mix)")
    cost.set_ylim(bottom=0)
    cost.grid(True, alpha=0.3)
    rss = cost.twinx()
    rss.plot(x, [p["rss_mib"] for p in points], "s--", color="#ff7f0e", label="RSS (MiB)")
    rss.set_ylabel("RSS (MiB)")
    rss.set_ylim(bottom=0)
    cost.set_title("Review cost against cluster size (real kube-apiserver, list+watch)")
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--details", type=Path, default=REPO_ROOT / "bench" / "results" / "details.json")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench.png")
    args = parser.parse_args()
    details = json.loads(args.details.read_text())
    plot(details, args.out)
    print(f"wrote {args.out}")
    scale_out = args.out.with_name("bench-scale.png")
    if plot_scale(details, scale_out):
        print(f"wrote {scale_out}")


if __name__ == "__main__":
    main()
