#!/usr/bin/env bash
# Makes a CA and a serving certificate for crdguard's Service with `crdguard certs`, and writes
# what the chart's tls.mode=existingSecret needs:
#
#   OUT/ca.crt, OUT/tls.crt, OUT/tls.key   PEM files (tls.key is mode 0600)
#   OUT/secret.yaml                        a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt)
#   OUT/caBundle                           base64 of ca.crt, for the webhook's caBundle
#
# and prints the helm flags to install with. The certificate names <service>.<namespace>.svc
# and <service>.<namespace>.svc.cluster.local, plus any --extra-hosts (e.g. 127.0.0.1 to run
# crdguard outside the cluster behind webhook.url).
#
# Usage: certs/make-certs.sh [--service NAME] [--namespace NS] [--out DIR]
#                            [--secret-name NAME] [--days N] [--extra-hosts H1,H2]
# Each flag also reads an environment variable; flags win:
#   CRDGUARD_SERVICE (crdguard)  CRDGUARD_NAMESPACE (crdguard-system)  CRDGUARD_CERTS_OUT (./crdguard-certs)
#   CRDGUARD_SECRET_NAME (<service>-tls)  CRDGUARD_CERT_DAYS (365)  CRDGUARD_EXTRA_HOSTS ()
#   CRDGUARD: the crdguard command to run (crdguard on PATH)
set -euo pipefail

service=${CRDGUARD_SERVICE:-crdguard}
namespace=${CRDGUARD_NAMESPACE:-crdguard-system}
out=${CRDGUARD_CERTS_OUT:-./crdguard-certs}
secret_name=${CRDGUARD_SECRET_NAME:-}
days=${CRDGUARD_CERT_DAYS:-365}
extra_hosts=${CRDGUARD_EXTRA_HOSTS:-}
crdguard=${CRDGUARD:-crdguard}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { printf 'make-certs.sh: error: %s\n' "$*" >&2; exit 2; }

while (($#)); do
  case $1 in
    --service) service=${2:?--service needs a value}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --secret-name) secret_name=${2:?--secret-name needs a value}; shift 2 ;;
    --days) days=${2:?--days needs a value}; shift 2 ;;
    --extra-hosts) extra_hosts=${2:?--extra-hosts needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
secret_name=${secret_name:-$service-tls}

dns_label='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
[[ $service =~ $dns_label ]] || die "--service '$service' is not a DNS label (lower case, digits, '-')"
[[ $namespace =~ $dns_label ]] || die "--namespace '$namespace' is not a DNS label"
[[ $days =~ ^[1-9][0-9]*$ ]] || die "--days '$days' is not a positive number"
command -v "$crdguard" >/dev/null 2>&1 || die "'$crdguard' not found; install crdguard or set CRDGUARD"

host="$service.$namespace.svc"
hosts="$host,$host.cluster.local${extra_hosts:+,$extra_hosts}"
ca_bundle=$("$crdguard" certs --out "$out" --hosts "$hosts" --days "$days")

b64() { base64 <"$1" | tr -d '\n'; }
printf '%s\n' "$ca_bundle" >"$out/caBundle"
umask 077
cat >"$out/secret.yaml" <<YAML
# crdguard's serving certificate for $host, made by certs/make-certs.sh.
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: $secret_name
  namespace: $namespace
data:
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
  ca.crt: $(b64 "$out/ca.crt")
YAML

cat <<EOF_FLAGS
Wrote $out/{ca.crt,tls.crt,tls.key,secret.yaml,caBundle} for $hosts.

  kubectl create namespace $namespace --dry-run=client -o yaml | kubectl apply -f -
  kubectl apply -f $out/secret.yaml

Helm flags (the Service must be named $service, hence fullnameOverride):

  --namespace $namespace --set fullnameOverride=$service --set tls.mode=existingSecret --set tls.existingSecret=$secret_name --set-file tls.caBundle=$out/caBundle
EOF_FLAGS
