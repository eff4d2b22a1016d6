"""docs/bench.png from bench/results/details.json: latency against offered load, three servers.

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
COLORS = {"crdguard": "#1f77b4", "floor": "#7f7f7f", "opa": "#d62728"}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--details", type=Path, default=REPO_ROOT / "bench" / "results" / "details.json")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench.png")
    args = parser.parse_args()
    plot(json.loads(args.details.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
