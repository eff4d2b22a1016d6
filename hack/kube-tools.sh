#!/usr/bin/env bash
# Builds the real control-plane programs the end-to-end tests run against
# (kube-apiserver, etcd, kubectl, helm) from their Go modules, and caches them
# outside the repository, keyed by version, so a machine builds them once.
#
# Usage: hack/kube-tools.sh [all|k8s|helm|path|env]
#
#   all   (default) build whatever is missing
#   k8s   build kube-apiserver, etcd and kubectl
#   helm  build helm
#   path  print the bin directories, colon-joined, for PATH
#   env   print export lines for CRDGUARD_KUBE_BIN_DIR and CRDGUARD_HELM
#
# Cache: ${CRDGUARD_TOOLS_DIR:-$HOME/.cache/crdguard/tools}/
#   k8s-<version>/{kube-apiserver,etcd,kubectl}
#   helm-<version>/helm
#   src/k8s-<version>/   throwaway wrapper module (regenerated on each build)
set -euo pipefail

K8S_VERSION=v1.35.4
HELM_VERSION=v3.21.4

TOOLS_DIR=${CRDGUARD_TOOLS_DIR:-$HOME/.cache/crdguard/tools}
K8S_DIR=$TOOLS_DIR/k8s-$K8S_VERSION
HELM_DIR=$TOOLS_DIR/helm-$HELM_VERSION
K8S_BINARIES=(kube-apiserver etcd kubectl)

# The staging modules (k8s.io/api, k8s.io/client-go, ...) are versioned v0.Y.Z
# for Kubernetes v1.Y.Z.
STAGING_VERSION=v0.${K8S_VERSION#v1.}

export GOWORK=off CGO_ENABLED=0

log() { printf 'kube-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

k8s_present() {
  local bin
  for bin in "${K8S_BINARIES[@]}"; do
    [[ -x $K8S_DIR/$bin ]] || return 1
  done
}

helm_present() { [[ -x $HELM_DIR/helm ]]; }

require_go() {
  command -v go >/dev/null 2>&1 || die "go is not installed; it is needed to build $*"
}

# Serialise builds: two test sessions starting at once must not both build.
with_lock() {
  mkdir -p "$TOOLS_DIR"
  exec 9>"$TOOLS_DIR/.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 9
  fi
  "$@"
}

# Move a freshly built directory into place in one rename, so a reader sees
# either no directory or a complete one.
publish() {
  local tmp=$1 dest=$2
  chmod 755 "$tmp"  # mktemp -d makes it private
  rm -rf "$dest"
  mv -T "$tmp" "$dest"
}

gomod_field() {
  # gomod_field MODULE@VERSION FIELD: a field of `go mod download -json`.
  (cd "$TOOLS_DIR" && go mod download -json "$1") | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}$/\1/p"
}

build_k8s() {
  if k8s_present; then
    log "k8s $K8S_VERSION already built in $K8S_DIR"
    return
  fi
  require_go "kube-apiserver, etcd and kubectl"
  local start=$SECONDS
  log "building kube-apiserver, etcd, kubectl $K8S_VERSION (takes a while the first time)"

  local upstream_mod
  upstream_mod=$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  [[ -f $upstream_mod ]] || die "could not locate go.mod of k8s.io/kubernetes@$K8S_VERSION"

  local go_directive staging
  go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$upstream_mod")
  # Every `k8s.io/<m> => ./staging/src/k8s.io/<m>` line names a staging module.
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$upstream_mod")
  [[ -n $go_directive && -n $staging ]] || die "unexpected layout of $upstream_mod"

  local src=$TOOLS_DIR/src/k8s-$K8S_VERSION
  rm -rf "$src"
  mkdir -p "$src/cmd/etcd"
  {
    echo "module crdguard.local/kubetools"
    echo
    echo "go $go_directive"
    echo
    grep '^godebug ' "$upstream_mod" || true
    echo
    echo "tool ("
    echo "	k8s.io/kubernetes/cmd/kube-apiserver"
    echo "	k8s.io/kubernetes/cmd/kubectl"
    echo ")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    local mod
    for mod in $staging; do
      echo "	$mod => $mod $STAGING_VERSION"
    done
    echo ")"
  } >"$src/go.mod"
  # etcd is built here rather than from its own module: k8s.io/apiserver
  # already requires go.etcd.io/etcd/server/v3, so grpc and otel stay at the
  # versions Kubernetes itself is compiled with.
  cat >"$src/cmd/etcd/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF

  local build_date major minor
  build_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" Info)")
  major=${K8S_VERSION#v}; major=${major%%.*}
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  local ldflags="-s -w" pkg
  # Without these, /version reports v0.0.0 and helm's kubeVersion checks misbehave.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${build_date:-1970-01-01T00:00:00Z}"
  done

  local tmp
  tmp=$(mktemp -d "$TOOLS_DIR/.k8s-$K8S_VERSION.XXXXXX")
  (
    cd "$src"
    go mod tidy
    go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kubectl \
      ./cmd/etcd
  ) || { rm -rf "$tmp"; die "building k8s $K8S_VERSION failed"; }
  publish "$tmp" "$K8S_DIR"
  log "built k8s $K8S_VERSION in $((SECONDS - start))s -> $K8S_DIR"
}

build_helm() {
  if helm_present; then
    log "helm $HELM_VERSION already built in $HELM_DIR"
    return
  fi
  require_go "helm"
  local start=$SECONDS
  log "building helm $HELM_VERSION"

  # The release Makefile's ldflags: without them `helm version` prints only
  # "v3.21" and offline `helm template` assumes Kubernetes v1.20.
  local helm_mod client_go k8s_minor
  helm_mod=$(gomod_field "helm.sh/helm/v3@$HELM_VERSION" GoMod)
  client_go=$(sed -n 's/^[[:space:]]*k8s\.io\/client-go \(v0\.[0-9]*\)\..*/\1/p' "$helm_mod" | head -n1)
  k8s_minor=${client_go#v0.}
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [[ -n $k8s_minor ]]; then
    local pkg
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
    done
  fi

  local tmp
  tmp=$(mktemp -d "$TOOLS_DIR/.helm-$HELM_VERSION.XXXXXX")
  GOBIN=$tmp go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    || { rm -rf "$tmp"; die "building helm $HELM_VERSION failed"; }
  publish "$tmp" "$HELM_DIR"
  log "built helm $HELM_VERSION in $((SECONDS - start))s -> $HELM_DIR"
}

build_all() {
  build_k8s
  build_helm
}

main() {
  local cmd=${1:-all}
  case $cmd in
    all)
      k8s_present && helm_present && return 0
      with_lock build_all
      ;;
    k8s)
      k8s_present && return 0
      with_lock build_k8s
      ;;
    helm)
      helm_present && return 0
      with_lock build_helm
      ;;
    path)
      echo "$K8S_DIR:$HELM_DIR"
      ;;
    env)
      printf 'export CRDGUARD_KUBE_BIN_DIR=%q\n' "$K8S_DIR"
      printf 'export CRDGUARD_HELM=%q\n' "$HELM_DIR/helm"
      ;;
    -h | --help | help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      ;;
    *)
      die "unknown command '$cmd' (expected all, k8s, helm, path or env)"
      ;;
  esac
}

main "$@"
