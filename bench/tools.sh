#!/usr/bin/env bash
# Builds the benchmark's compiled helpers and caches them outside the repository:
# the load generator (bench/loadgen, standard library only) and OPA, pinned.
#
# Usage: bench/tools.sh [all|loadgen|opa|env]
#   all      (default) build whatever is missing
#   loadgen  build the load generator (rebuilt when its sources change)
#   opa      build OPA with `go install` from its Go module
#   env      print export lines for CRDGUARD_LOADGEN and CRDGUARD_OPA
#
# Cache: ${CRDGUARD_TOOLS_DIR:-$HOME/.cache/crdguard/tools}/
#   loadgen-<sha of its sources>/loadgen
#   opa-<version>/opa
set -euo pipefail

# OPA v1.x: its go.mod has no replace or exclude directive, so `go install mod@version` works.
OPA_VERSION=v1.22.4

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS_DIR=${CRDGUARD_TOOLS_DIR:-$HOME/.cache/crdguard/tools}
OPA_DIR=$TOOLS_DIR/opa-$OPA_VERSION
LOADGEN_SUM=$(cat "$HERE"/loadgen/go.mod "$HERE"/loadgen/*.go | sha256sum | cut -c1-12)
LOADGEN_DIR=$TOOLS_DIR/loadgen-$LOADGEN_SUM

export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf 'bench-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
require_go() { command -v go >/dev/null 2>&1 || die "go is not installed; it is needed to build $*"; }

with_lock() {
  mkdir -p "$TOOLS_DIR"
  exec 8>"$TOOLS_DIR/.bench-lock"
  if command -v flock >/dev/null 2>&1; then flock 8; fi
  "$@"
}

build_loadgen() {
  [[ -x $LOADGEN_DIR/loadgen ]] && return 0
  require_go "the load generator"
  local tmp
  tmp=$(mktemp -d "$TOOLS_DIR/.loadgen.XXXXXX")
  log "building the load generator into $LOADGEN_DIR"
  (cd "$HERE/loadgen" && go build -trimpath -o "$tmp/loadgen" .)
  rm -rf "$LOADGEN_DIR" && mv "$tmp" "$LOADGEN_DIR"
}

build_opa() {
  [[ -x $OPA_DIR/opa ]] && return 0
  require_go "OPA"
  local tmp
  tmp=$(mktemp -d "$TOOLS_DIR/.opa.XXXXXX")
  log "building OPA $OPA_VERSION from its Go module (a few minutes the first time)"
  GOBIN=$tmp go install "github.com/open-policy-agent/opa@$OPA_VERSION"
  rm -rf "$OPA_DIR" && mv "$tmp" "$OPA_DIR"
}

case ${1:-all} in
  all) with_lock build_loadgen; with_lock build_opa ;;
  loadgen) with_lock build_loadgen ;;
  opa) with_lock build_opa ;;
  env)
    echo "export CRDGUARD_LOADGEN=$LOADGEN_DIR/loadgen"
    echo "export CRDGUARD_OPA=$OPA_DIR/opa"
    echo "export CRDGUARD_OPA_VERSION=$OPA_VERSION"
    ;;
  *) die "unknown command ${1}; use all, loadgen, opa or env" ;;
esac
