# crdguard's default catalog and admission decision, written in Rego for the benchmark.
#
# OPA answers the API server's wire format directly: POST the AdmissionReview as the body of
#   /v0/data/crdguard/review
# and the v0 data API returns the value of `review` below, a complete AdmissionReview with the
# response (uid echoed, allowed, status and warnings), just as crdguard answers /validate.
#
# The cluster state is OPA data under data.cluster, generated from the same scenario by
# bench/opa_data.py, indexed the way crdguard's inventory holds it (so both servers do lookups,
# not scans):
#   data.cluster.crds[<crd name>]                  = {"served": [..], "listed": [..], "bundle": ..}
#   data.cluster.releases[<component>][<source>]   = [release, ..]   (source "Kind/namespace/name")
#   data.cluster.ocirepositories[<source>]         = {"url", "tag", "semver", "digest"}
# A release is {"component", "version" (semver without "v", or null), "version_text", "source",
# "detail", "features"}.
#
# Same semantics as webhook/rules/engine.py: a change is judged by the conflicts it adds
# (after minus before, by rule, source and CRD); conflicts already present are warnings.
# Not implemented (not in the benchmark's payloads): OCIRepository writes; they are allowed.
package crdguard

# -- the catalog (webhook/rules/catalog/default.yaml) -------------------------------------------

components := {"kgateway": {
	"images": {"kgateway"},
	"labels": {"app.kubernetes.io/name": "kgateway"},
	"charts": {"kgateway"},
	"chart_label": "helm.sh/chart",
	"features": {"inferenceExtension": {
		"env": {"name": "KGW_ENABLE_INFER_EXT", "value": "true"},
		"helm_value": {"path": ["inferenceExtension", "enabled"], "value": true},
	}},
}}

catalog_rules := {
	"kgateway-2.0-reads-backendtlspolicy-v1alpha3": {
		"component": "kgateway",
		"versions": [[">=", "2.0.0"], ["<", "2.1.0"]],
		"crd": "backendtlspolicies.gateway.networking.k8s.io",
		"crd_kind": "BackendTLSPolicy",
		"served_version": "v1alpha3",
		"missing_tolerated": true,
		"feature": null,
		"enforcement": "deny",
	},
	"kgateway-2.1-reads-backendtlspolicy-v1": {
		"component": "kgateway",
		"versions": [[">=", "2.1.0"]],
		"crd": "backendtlspolicies.gateway.networking.k8s.io",
		"crd_kind": "BackendTLSPolicy",
		"served_version": "v1",
		"missing_tolerated": true,
		"feature": null,
		"enforcement": "deny",
	},
	"kgateway-2.1-requires-backendconfigpolicy-crd": {
		"component": "kgateway",
		"versions": [[">=", "2.1.0"]],
		"crd": "backendconfigpolicies.gateway.kgateway.dev",
		"crd_kind": "BackendConfigPolicy",
		"served_version": null,
		"missing_tolerated": false,
		"feature": null,
		"enforcement": "deny",
	},
	"kgateway-2.0-reads-inferencepool-x-k8s-v1alpha2": {
		"component": "kgateway",
		"versions": [[">=", "2.0.0"], ["<", "2.1.0"]],
		"crd": "inferencepools.inference.networking.x-k8s.io",
		"crd_kind": "InferencePool",
		"served_version": "v1alpha2",
		"missing_tolerated": true,
		"feature": "inferenceExtension",
		"enforcement": "deny",
	},
	"kgateway-2.1-reads-inferencepool-v1": {
		"component": "kgateway",
		"versions": [[">=", "2.1.0"]],
		"crd": "inferencepools.inference.networking.k8s.io",
		"crd_kind": "InferencePool",
		"served_version": "v1",
		"missing_tolerated": true,
		"feature": "inferenceExtension",
		"enforcement": "deny",
	},
}

# The catalog indexed by CRD and by component, as crdguard's Catalog is.
rules_by_crd := {crd: ids |
	some rule in catalog_rules
	crd := rule.crd
	ids := {id | some id, r in catalog_rules; r.crd == crd}
}

rules_by_component := {component: ids |
	some rule in catalog_rules
	component := rule.component
	ids := {id | some id, r in catalog_rules; r.component == component}
}

# -- the request ---------------------------------------------------------------------------------

req := input.request

req_group := object.get(req.kind, "group", "")

req_kind := req.kind.kind

is_crd if {
	req_group == "apiextensions.k8s.io"
	req_kind == "CustomResourceDefinition"
}

judged_kinds := {["apps", "Deployment"], ["helm.toolkit.fluxcd.io", "HelmRelease"]}

change_name := req.name if {
	is_string(req.name)
	req.name != ""
} else := name if {
	obj := object.get(req, "object", null)
	is_object(obj)
	name := obj.metadata.name
} else := name if {
	obj := object.get(req, "oldObject", null)
	is_object(obj)
	name := obj.metadata.name
} else := ""

change_namespace := "" if {
	is_crd
} else := object.get(req, "namespace", "")

source_key := sprintf("%s/%s/%s", [req_kind, change_namespace, change_name])

judged if {
	is_crd
	req.operation in {"CREATE", "UPDATE", "DELETE"}
	rules_by_crd[change_name]
}

judged if {
	not is_crd
	[req_group, req_kind] in judged_kinds
	req.operation in {"CREATE", "UPDATE"}
}

# The object in each view: before = oldObject, after = object (null when absent).
view_object("before") := object.get(req, "oldObject", null)

view_object("after") := object.get(req, "object", null)

# -- detection (webhook/rules/detect.py) ----------------------------------------------------------

exact_version(text) := trim_prefix(text, "v") if {
	is_string(text)
	regex.match(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`, text)
} else := null

# The last path segment of an image's repository, and its tag (null when there is none).
image_name(image) := split(last_segment(split(image, "@")[0]), ":")[0]

image_tag(image) := tag if {
	segment := last_segment(split(image, "@")[0])
	contains(segment, ":")
	tag := substring(segment, indexof(segment, ":") + 1, -1)
} else := concat("", ["@", split(image, "@")[1]]) if {
	contains(image, "@")
} else := null

last_segment(path) := parts[count(parts) - 1] if parts := split(path, "/")

env_value(container, name) := value if {
	some item in object.get(container, "env", [])
	item.name == name
	value := item.value
}

releases_of(obj) := set() if {
	obj == null
} else := deployment_releases(obj) if {
	req_kind == "Deployment"
} else := helmrelease_releases(obj) if {
	req_kind == "HelmRelease"
} else := set()

deployment_releases(obj) := {release |
	containers := object.get(obj, ["spec", "template", "spec", "containers"], [])
	labels := object.get(obj, ["metadata", "labels"], {})
	some cname, component in components
	matching := [c | some c in containers; image_name(object.get(c, "image", "")) in component.images]
	detected(matching, labels, component)
	features := {fname |
		some fname, feature in component.features
		feature.env != null
		some c in containers
		env_value(c, feature.env.name) == feature.env.value
	}
	release := deployment_release(cname, matching, labels, features)
}

detected(matching, _, _) if count(matching) > 0

detected(_, labels, component) if {
	count(component.labels) > 0
	every k, v in component.labels {
		labels[k] == v
	}
}

deployment_release(cname, matching, labels, features) := release if {
	count(matching) > 0
	image := matching[0].image
	tag := tag_or_latest(image_tag(image))
	release := make_release(cname, tag, sprintf("image %s", [image]), features)
} else := release if {
	some chart in components[cname].charts
	label := object.get(labels, components[cname].chart_label, "")
	startswith(label, concat("", [chart, "-"]))
	text := substring(label, count(chart) + 1, -1)
	release := make_release(cname, text, sprintf("label %s=%s", [components[cname].chart_label, label]), features)
} else := {
	"component": cname,
	"version": null,
	"version_text": "(unknown version)",
	"source": source_key,
	"detail": "labels",
	"features": features,
}

tag_or_latest(tag) := tag if {
	tag != null
} else := "latest"

make_release(component, text, detail, features) := {
	"component": component,
	"version": exact_version(text),
	"version_text": text,
	"source": source_key,
	"detail": detail,
	"features": features,
}

helmrelease_releases(obj) := {release |
	chart_info := helm_chart(obj)
	some cname, component in components
	chart_info.chart in component.charts
	values := object.get(obj, ["spec", "values"], {})
	features := {fname |
		some fname, feature in component.features
		feature.helm_value != null
		object.get(values, feature.helm_value.path, null) == feature.helm_value.value
	}
	release := make_release(cname, chart_info.version_text, chart_info.detail, features)
}

helm_chart(obj) := info if {
	spec := object.get(obj, ["spec", "chart", "spec"], {})
	is_string(spec.chart)
	spec.chart != ""
	version := object.get(spec, "version", "")
	info := {
		"chart": spec.chart,
		"version_text": version_or_any(version),
		"detail": sprintf("chart %s", [spec.chart]),
	}
} else := info if {
	ref := object.get(obj, ["spec", "chartRef"], {})
	object.get(ref, "kind", "OCIRepository") == "OCIRepository"
	namespace := object.get(ref, "namespace", change_namespace)
	key := sprintf("OCIRepository/%s/%s", [namespace, ref.name])
	oci := data.cluster.ocirepositories[key]
	url_parts := split(trim_right(oci.url, "/"), "/")
	info := {
		"chart": url_parts[count(url_parts) - 1],
		"version_text": oci_version(oci),
		"detail": sprintf("%s %s", [key, oci.url]),
	}
}

version_or_any(version) := version if {
	is_string(version)
	version != ""
} else := "*"

# Flux's precedence: digest, then semver, then tag.
oci_version(oci) := concat("", ["@", oci.digest]) if {
	oci.digest
} else := oci.semver if {
	oci.semver
} else := oci.tag if {
	oci.tag
} else := "latest"

# -- the two views of the cluster -----------------------------------------------------------------

changed_releases(view) := releases_of(view_object(view))

# Releases of `component` in a view: the stored ones, except those of the changed object,
# whose releases come from its version in this view.
view_releases(view, component) := {r |
	some key, rels in data.cluster.releases[component]
	key != source_key
	some r in rels
} | {r |
	some r in changed_releases(view)
	r.component == component
}

view_crd(view, name) := crd if {
	is_crd
	name == change_name
	crd := changed_crd(view_object(view))
} else := {"present": true, "served": {v | some v in crd.served}} if {
	crd := data.cluster.crds[name]
} else := {"present": false}

changed_crd(obj) := {"present": false} if {
	obj == null
} else := {"present": true, "served": {v.name |
	some v in object.get(obj, ["spec", "versions"], [])
	v.served == true
}}

pairs(view) := {[id, r] |
	is_crd
	some id in rules_by_crd[change_name]
	some r in view_releases(view, catalog_rules[id].component)
} | {[id, r] |
	some r in changed_releases(view)
	some id in rules_by_component[r.component]
}

applies(rule, _) if rule.feature == null

applies(rule, release) if rule.feature in release.features

in_range(version, comparators) if {
	every c in comparators {
		compare_ok(c[0], semver.compare(version, c[1]))
	}
}

compare_ok(">=", x) if x >= 0

compare_ok(">", x) if x > 0

compare_ok("<=", x) if x <= 0

compare_ok("<", x) if x < 0

compare_ok("=", x) if x == 0

compare_ok("!=", x) if x != 0

lacks(rule, crd) if {
	not crd.present
	not rule.missing_tolerated
}

lacks(rule, crd) if {
	crd.present
	rule.served_version != null
	not rule.served_version in crd.served
}

conflicts(view) := {key: {"rule": id, "release": r, "crd": crd} |
	some pair in pairs(view)
	[id, r] := pair
	rule := catalog_rules[id]
	applies(rule, r)
	r.version != null
	in_range(r.version, rule.versions)
	crd := view_crd(view, rule.crd)
	lacks(rule, crd)
	key := sprintf("%s|%s|%s", [id, r.source, rule.crd])
}

unchecked := {r.source: r |
	some pair in pairs("after")
	[id, r] := pair
	applies(catalog_rules[id], r)
	r.version == null
}

before := conflicts("before") if judged

after := conflicts("after") if judged

added := {key: c | some key, c in after; not before[key]}

existing := {key: c | some key, c in after; before[key]}

denied := {key: c | some key, c in added; catalog_rules[c.rule].enforcement == "deny"}

# -- the answer -----------------------------------------------------------------------------------

default allowed := true

allowed := false if count(denied) > 0

describe(c) := sprintf("%s %s in %s needs %s: %s", [
	c.release.component,
	c.release.version_text,
	c.release.source,
	need(catalog_rules[c.rule]),
	crd_state(catalog_rules[c.rule], c.crd),
])

need(rule) := sprintf("the CRD %s to be installed", [rule.crd]) if {
	rule.served_version == null
} else := sprintf("%s %s/%s to be served", [rule.crd_kind, substring(rule.crd, indexof(rule.crd, ".") + 1, -1), rule.served_version])

crd_state(rule, crd) := sprintf("%s is not installed", [rule.crd]) if {
	not crd.present
} else := sprintf("%s serves %s", [rule.crd, concat(", ", sort([v | some v in crd.served]))])

message := sprintf("crdguard denied %s of %s %s: it would introduce %d CRD conflict(s) with an installed controller.\n%s", [
	req.operation,
	req_kind,
	change_name,
	count(denied),
	concat("\n", sort([describe(c) | some c in denied])),
])

warnings := [w |
	some c in existing
	w := substring(sprintf("already broken: %s", [describe(c)]), 0, 119)
] if {
	judged
} else := []

unchecked_warnings := [w |
	some r in unchecked
	w := substring(sprintf("%s %s in %s: not one exact version, not checked", [r.component, r.version_text, r.source]), 0, 119)
] if {
	judged
} else := []

all_warnings := array.concat(warnings, unchecked_warnings)

response := {"uid": req.uid, "allowed": true} if {
	allowed
	count(all_warnings) == 0
} else := {"uid": req.uid, "allowed": true, "warnings": all_warnings} if {
	allowed
} else := {
	"uid": req.uid,
	"allowed": false,
	"status": {"code": 403, "reason": "Forbidden", "message": message},
	"warnings": all_warnings,
}

review := {
	"apiVersion": input.apiVersion,
	"kind": "AdmissionReview",
	"response": response,
}
