#!/usr/bin/env bash
# `make bench`: build the load generator and OPA (cached outside the repository),
# make sure the control-plane binaries exist, run the benchmark, draw the plot.
#
# Environment:
#   CRDGUARD_UPSTREAM       the upstream manifests (default ../shared/upstream)
#   CRDGUARD_BENCH_CPUS     "loadgen,server" cores for taskset (default: the first two)
#   CRDGUARD_BENCH_ARGS     extra arguments for bench/run.py (e.g. "--rounds 5")
#   CRDGUARD_BENCH_PLOT_PYTHON  a Python with matplotlib, if the venv has none
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

command -v taskset >/dev/null 2>&1 || echo "bench: taskset (util-linux) not found: servers and load generator will not be pinned" >&2
bash bench/tools.sh all
if command -v go >/dev/null 2>&1; then
  bash hack/kube-tools.sh k8s
else
  echo "bench: go not found: the end-to-end apply measurement needs hack/kube-tools.sh's binaries" >&2
fi

# shellcheck disable=SC2086
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m bench.run ${CRDGUARD_BENCH_ARGS:-}

PLOT_PYTHON=${CRDGUARD_BENCH_PLOT_PYTHON:-$PYTHON}
if "$PLOT_PYTHON" -c 'import matplotlib' 2>/dev/null; then
  "$PLOT_PYTHON" bench/plot.py
else
  echo "bench: matplotlib not installed (pip install -e '.[bench]'): docs/bench.png not drawn" >&2
fi
