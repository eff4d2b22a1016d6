{{/* Chart name, or nameOverride. */}}
{{- define "crdguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Resource name prefix: fullnameOverride, else <release>-<name> (just <release> when it already
contains the name). Truncated to 63 characters, the DNS label limit of Service names.
*/}}
{{- define "crdguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "crdguard.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "crdguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the pods; never change them, Deployment selectors are immutable. */}}
{{- define "crdguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crdguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "crdguard.labels" -}}
helm.sh/chart: {{ include "crdguard.chart" . }}
{{ include "crdguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crdguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "crdguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "crdguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest pins the image. */}}
{{- define "crdguard.image" -}}
{{- if not .Values.image.repository -}}
{{- fail (printf "image.repository is required: no registry this chart can trust publishes crdguard. Build the image from the repository's Dockerfile and push it where your cluster pulls from (docker build -t <registry>/crdguard:%s . && docker push <registry>/crdguard:%s), then install with --set image.repository=<registry>/crdguard --set image.tag=%s" .Chart.AppVersion .Chart.AppVersion .Chart.AppVersion) -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when crdguard runs in the cluster, false when webhook.url points elsewhere. */}}
{{- define "crdguard.inCluster" -}}
{{- if not .Values.webhook.url }}true{{ end -}}
{{- end -}}

{{/* The DNS name the API server uses to reach the Service, and the serving certificate's names. */}}
{{- define "crdguard.serviceHost" -}}
{{- printf "%s.%s.svc" (include "crdguard.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "crdguard.serviceDNSNames" -}}
{{- $host := include "crdguard.serviceHost" . -}}
{{- toJson (list $host (printf "%s.cluster.local" $host)) -}}
{{- end -}}

{{/* Name of the Secret holding tls.crt and tls.key that the pods mount. */}}
{{- define "crdguard.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" -}}
{{- .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "crdguard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Catalog file names from catalog.extra, in the order they are passed (later wins by rule id). */}}
{{- define "crdguard.catalogFiles" -}}
{{- toJson (keys .Values.catalog.extra | sortAlpha) -}}
{{- end -}}

{{/*
Every YAML document of catalog.extra, parsed, as a JSON list; fails on a document that does not
parse or is not a CompatibilityCatalog, naming the file.
*/}}
{{- define "crdguard.extraCatalogDocs" -}}
{{- $docs := list -}}
{{- range $file := (keys .Values.catalog.extra | sortAlpha) -}}
{{- range $text := regexSplit "(?m)^---[ \t]*$" (index $.Values.catalog.extra $file) -1 -}}
{{- if trim $text -}}
{{- $doc := fromYaml $text -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "catalog.extra[%s] is not valid YAML: %s" $file $doc.Error) -}}
{{- end -}}
{{- if not (and (eq (toString $doc.kind) "CompatibilityCatalog") (eq (toString $doc.apiVersion) "crdguard.io/v1alpha1")) -}}
{{- fail (printf "catalog.extra[%s]: every document must be apiVersion crdguard.io/v1alpha1, kind CompatibilityCatalog" $file) -}}
{{- end -}}
{{- $docs = append $docs $doc -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $docs -}}
{{- end -}}

{{/* webhook.crdNames plus the CRDs named by catalog.extra rules, sorted, as a JSON list. */}}
{{- define "crdguard.crdNames" -}}
{{- $names := .Values.webhook.crdNames -}}
{{- range $doc := include "crdguard.extraCatalogDocs" . | fromJsonArray -}}
{{- range $rule := (default list $doc.rules) -}}
{{- if $rule.crd }}{{ $names = append $names $rule.crd }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toJson ($names | uniq | sortAlpha) -}}
{{- end -}}

{{/* webhook.componentMatch plus the detection of catalog.extra components, as JSON. */}}
{{- define "crdguard.componentMatch" -}}
{{- $match := .Values.webhook.componentMatch -}}
{{- $images := default list $match.images -}}
{{- $labels := default list $match.labels -}}
{{- $charts := default list $match.charts -}}
{{- range $doc := include "crdguard.extraCatalogDocs" . | fromJsonArray -}}
{{- range $component := (default list $doc.components) -}}
{{- $detect := default dict $component.detect -}}
{{- $images = concat $images (default list $detect.images) -}}
{{- $charts = concat $charts (default list $detect.charts) -}}
{{- if $detect.labels }}{{ $labels = append $labels $detect.labels }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "images" ($images | uniq | sortAlpha) "labels" $labels "charts" ($charts | uniq | sortAlpha)) -}}
{{- end -}}

{{/*
CEL, true when a container of a Deployment runs an image of componentMatch.images, as crdguard's
detection reads it: the repository path ends in one of them on whole segments ("/" + image, so the
start of the image is a segment boundary too), followed by ":" (tag), "@" (digest) or nothing. A
"library/<name>" entry also lists "<name>", for Docker Hub images written without "library/". One
list and one exists() whatever the catalog's size, so the expression stays within the API server's
limits; it may send a few more Deployments than crdguard recognises, never fewer. has() guards keep
it false, never an error, when fields are absent.
*/}}
{{- define "crdguard.cel.deployment" -}}
{{- $match := include "crdguard.componentMatch" . | fromJson -}}
{{- $any := list -}}
{{- if $match.images -}}
{{- $paths := list -}}
{{- $bare := list -}}
{{- range $path := $match.images -}}
{{- $paths = append $paths $path -}}
{{- if hasPrefix "library/" $path }}{{ $bare = append $bare (trimPrefix "library/" $path) }}{{ end -}}
{{- end -}}
{{- /* A Docker Hub official image written without "library/" (traefik:v3.6.0, docker.io/traefik) is matched
  on the whole name, so that another repository ending in /traefik is not sent. */ -}}
{{- $official := "" -}}
{{- if $bare -}}
{{- $official = printf " || %s.exists(n, [\"\", \"docker.io/\", \"index.docker.io/\"].exists(r, c.image == r + n || c.image.startsWith(r + n + \":\") || c.image.startsWith(r + n + \"@\")))" (toJson ($bare | uniq | sortAlpha)) -}}
{{- end -}}
{{- $any = append $any (printf "(has(object.spec) && has(object.spec.template) && has(object.spec.template.spec) && has(object.spec.template.spec.containers) && object.spec.template.spec.containers.exists(c, has(c.image) && (%s.exists(p, (\"/\" + c.image).contains(\"/\" + p + \":\") || (\"/\" + c.image).contains(\"/\" + p + \"@\") || (\"/\" + c.image).endsWith(\"/\" + p))%s)))" (toJson ($paths | uniq | sortAlpha)) $official) -}}
{{- end -}}
{{- range $set := $match.labels -}}
{{- $all := list "has(object.metadata.labels)" -}}
{{- range $key, $value := $set -}}
{{- $all = append $all (printf "(%s in object.metadata.labels && object.metadata.labels[%s] == %s)" ($key | quote) ($key | quote) ($value | quote)) -}}
{{- end -}}
{{- $any = append $any (printf "(%s)" (join " && " $all)) -}}
{{- end -}}
{{- if $any }}{{ join " || " $any }}{{ else }}false{{ end -}}
{{- end -}}

{{/*
CEL, true when spec.chart (a Flux or k3s HelmChart: a chart name, a path or an oci:// URL) names
one of componentMatch.charts.
*/}}
{{- define "crdguard.cel.chartField" -}}
{{- $match := include "crdguard.componentMatch" . | fromJson -}}
{{- printf "has(object.spec.chart) && %s.exists(n, object.spec.chart == n || object.spec.chart.endsWith(\"/\" + n))" (toJson (default list $match.charts)) -}}
{{- end -}}

{{/*
CEL for Flux objects: a HelmRelease whose chart is one of componentMatch.charts or that uses
spec.chartRef (its chart name is in the referenced OCIRepository or HelmChart), an OCIRepository
whose URL ends in /<chart>, and a HelmChart whose spec.chart names a chart.
*/}}
{{- define "crdguard.cel.flux" -}}
{{- $match := include "crdguard.componentMatch" . | fromJson -}}
{{- $charts := toJson (default list $match.charts) -}}
{{- $helmRelease := printf "(has(object.spec.chart) && has(object.spec.chart.spec) && has(object.spec.chart.spec.chart) && object.spec.chart.spec.chart in %s) || has(object.spec.chartRef)" $charts -}}
{{- $ociRepository := printf "has(object.spec.url) && %s.exists(n, object.spec.url.endsWith(\"/\" + n) || object.spec.url.endsWith(\"/\" + n + \"/\"))" $charts -}}
{{- printf "has(object.spec) && (request.kind.kind == \"HelmRelease\" ? (%s) : request.kind.kind == \"OCIRepository\" ? (%s) : (%s))" $helmRelease $ociRepository (include "crdguard.cel.chartField" .) -}}
{{- end -}}

{{/*
CEL for Argo CD Applications: spec.source or any of spec.sources whose chart is one of
componentMatch.charts, or whose repoURL ends in /<chart> (an OCI Helm source without chart).
*/}}
{{- define "crdguard.cel.argocd" -}}
{{- $match := include "crdguard.componentMatch" . | fromJson -}}
{{- $charts := toJson (default list $match.charts) -}}
{{- $source := printf "(has(s.chart) && s.chart in %s) || (has(s.repoURL) && %s.exists(n, s.repoURL.endsWith(\"/\" + n)))" $charts $charts -}}
{{- printf "has(object.spec) && ((has(object.spec.source) && [object.spec.source].exists(s, %s)) || (has(object.spec.sources) && object.spec.sources.exists(s, %s)))" $source $source -}}
{{- end -}}

{{/* Namespaces whose objects are never sent: the release namespace and webhook.excludedNamespaces. */}}
{{- define "crdguard.namespaceSelector" -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ prepend .Values.webhook.excludedNamespaces .Release.Namespace | uniq | toJson }}
{{- end -}}

{{/*
Only the release namespace: k3s and RKE2 keep their HelmCharts in kube-system, so excluding it
would leave every k3s install unguarded.
*/}}
{{- define "crdguard.releaseNamespaceSelector" -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ list .Release.Namespace | toJson }}
{{- end -}}

{{/* Every values check that no schema can express; fails with a message that says what to change. */}}
{{- define "crdguard.validate" -}}
{{- $tls := .Values.tls -}}
{{- if eq $tls.mode "existingSecret" -}}
{{- if and (not .Values.webhook.url) (not $tls.existingSecret) -}}
{{- fail "tls.mode=existingSecret needs tls.existingSecret: the name of a kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace; certs/make-certs.sh writes one" -}}
{{- end -}}
{{- if not $tls.caBundle -}}
{{- fail "tls.mode=existingSecret needs tls.caBundle: base64 of the PEM CA that signed the serving certificate (the API server verifies crdguard with it), e.g. --set tls.caBundle=$(base64 -w0 ca.crt)" -}}
{{- end -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec (nospace $tls.caBundle))) -}}
{{- fail "tls.caBundle must be base64 of a PEM certificate (-----BEGIN CERTIFICATE-----...), e.g. $(base64 -w0 ca.crt); it looks like something else" -}}
{{- end -}}
{{- else -}}
{{- if $tls.caBundle -}}
{{- fail (printf "tls.caBundle is only read with tls.mode=existingSecret; tls.mode=%s provides its own CA. Remove tls.caBundle or set tls.mode=existingSecret" $tls.mode) -}}
{{- end -}}
{{- if $tls.existingSecret -}}
{{- fail (printf "tls.existingSecret is only read with tls.mode=existingSecret, but tls.mode=%s. Remove it or set tls.mode=existingSecret" $tls.mode) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.webhook.url (ne $tls.mode "existingSecret") -}}
{{- fail (printf "webhook.url points the API server at a crdguard outside the cluster, whose certificate the chart neither makes nor sees: set tls.mode=existingSecret and tls.caBundle to that certificate's CA (tls.mode=%s only serves in-cluster pods)" $tls.mode) -}}
{{- end -}}
{{- if ge (add (int .Values.gracefulShutdownSeconds) (int .Values.preStopSleepSeconds)) (int .Values.terminationGracePeriodSeconds) -}}
{{- fail (printf "gracefulShutdownSeconds (%d) + preStopSleepSeconds (%d) must be lower than terminationGracePeriodSeconds (%d), or pods are killed while finishing reviews" (int .Values.gracefulShutdownSeconds) (int .Values.preStopSleepSeconds) (int .Values.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (has .Values.metrics.host (list "127.0.0.1" "localhost" "::1")) -}}
{{- fail (printf "metrics.serviceMonitor.enabled scrapes the pods through the Service, but metrics.host=%s keeps the metrics port pod-local; set metrics.host=0.0.0.0 or turn the ServiceMonitor off" .Values.metrics.host) -}}
{{- end -}}
{{- if and (include "crdguard.inCluster" .) .Values.podDisruptionBudget.enabled (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- fail (printf "podDisruptionBudget.minAvailable (%d) must be lower than replicaCount (%d), or no node holding a crdguard pod can ever be drained; raise replicaCount or set podDisruptionBudget.enabled=false" (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) -}}
{{- end -}}
{{- end -}}

{{/* The fields every webhook of the configuration shares. Takes (dict "root" $ "caBundle" base64). */}}
{{- define "crdguard.webhookCommon" -}}
{{- $root := .root -}}
clientConfig:
  {{- if $root.Values.webhook.url }}
  url: {{ $root.Values.webhook.url | quote }}
  {{- else }}
  service:
    name: {{ include "crdguard.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: /validate
    port: 443
  {{- end }}
  {{- with .caBundle }}
  caBundle: {{ . }}
  {{- end }}
admissionReviewVersions: ["v1"]
sideEffects: None
matchPolicy: Equivalent
failurePolicy: {{ $root.Values.webhook.failurePolicy }}
timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
{{- end -}}
