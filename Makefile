# crdguard: every target installs what it needs from this repository's own files.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
DEV := $(VENV)/.dev
# Tests that belong to their own targets: deselected (not skipped) in `make test`.
OWN_TARGETS := not soak and not audit_deps and not bench
RUN_DIR := .run
PORT ?= 8443

.PHONY: help venv lint test unit e2e e2e-tools run bench soak audit-deps chart lock clean releases catalog-verify catalog-table

help:
	@echo "make run    serve the demo on https://127.0.0.1:$(PORT) (reported incident state)"
	@echo "make test   lint, type-check, import contracts, unit and end-to-end tests"
	@echo "make e2e    only the end-to-end tests against a real kube-apiserver"
	@echo "make bench  benchmarks (crdguard vs floor vs OPA), writes bench/results/latest.json"
	@echo "make soak   10 minutes of mixed load with a live watch cache"
	@echo "make audit-deps  pip-audit over requirements.lock (needs the advisory service)"
	@echo "make chart  package the Helm chart into dist/"
	@echo "make catalog-verify  check every catalog evidence identifier at its tag (network), writes docs/catalog-evidence.md"
	@echo "make catalog-table   regenerate the README's catalog table from the catalog"

# Runtime dependencies only (what `pip install .` gives): enough for `make run`.
$(RUNTIME): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	touch $@

# The development tools on top: linters, type checker, test runners.
$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

venv: $(DEV)

lint: $(DEV)
	$(BIN)/ruff check webhook tests bench
	$(BIN)/ruff format --check webhook tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Real kube-apiserver, etcd, kubectl and helm, built from their Go modules and cached outside the repo.
e2e-tools:
	@if command -v go >/dev/null 2>&1; then bash hack/kube-tools.sh all; \
	else echo "go not found: end-to-end tests will skip (and fail when CI=true)"; fi

unit: $(DEV)
	$(BIN)/pytest -m "not e2e and not slow and $(OWN_TARGETS)"

test: $(DEV) lint e2e-tools
	$(BIN)/pytest -m "$(OWN_TARGETS)"

e2e: $(DEV) e2e-tools
	$(BIN)/pytest -m "e2e and $(OWN_TARGETS)"

# Network-bound, so not part of `make test`: downloads each evidence module at its tag with `go mod
# download` and checks the cited file holds the identifier; exits 1 only when evidence is contradicted.
catalog-verify: $(DEV)
	$(BIN)/python hack/catalog_verify.py --out docs/catalog-evidence.md

# The README's catalog table, regenerated from webhook/rules/catalog/ (a unit test checks it is current).
catalog-table: $(RUNTIME)
	$(BIN)/python hack/catalog_table.py

run: $(RUNTIME)
	@mkdir -p $(RUN_DIR)
	@test -f $(RUN_DIR)/certs/tls.crt || $(BIN)/crdguard certs --out $(RUN_DIR)/certs --hosts localhost,127.0.0.1 >/dev/null
	@echo "Demo: kgateway v2.0.4 runs; Gateway API v1.4.0 standard's BackendTLSPolicy CRD is about to be applied."
	@echo "Try, in another terminal:"
	@echo "  $(BIN)/crdguard check --cluster examples/demo/cluster examples/demo/incoming"
	@echo "  curl -s --cacert $(RUN_DIR)/certs/ca.crt -H 'Content-Type: application/json' --data @examples/demo/review-backendtlspolicy-v1.json https://127.0.0.1:$(PORT)/validate"
	$(BIN)/crdguard serve --cluster examples/demo/cluster --cert-dir $(RUN_DIR)/certs --host 127.0.0.1 --port $(PORT)

# Release facts (what each Gateway API / Inference Extension / kgateway release installs) for the planner.
releases: $(DEV)
	$(BIN)/python hack/gen_releases.py

# OPA is the benchmark's comparison, not part of crdguard: built and checked here, not in `make test`.
bench: $(DEV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	bash bench/tools.sh all
	$(BIN)/pytest -m bench tests/unit/test_bench_smoke.py
	bash bench/run.sh

soak: $(DEV) e2e-tools
	$(BIN)/pytest -m soak -p no:cacheprovider tests/soak

# Fails, saying why, on a fixable vulnerability and when no advisory source answers.
audit-deps: $(DEV)
	$(BIN)/pytest -m audit_deps -p no:cacheprovider tests/reliability/test_dependencies.py

chart: e2e-tools
	@mkdir -p dist
	"$$(bash hack/kube-tools.sh env | sed -n 's/^export CRDGUARD_HELM=//p')" package charts/crdguard --destination dist

lock:
	rm -rf /tmp/crdguard-lock && $(PYTHON) -m venv /tmp/crdguard-lock
	/tmp/crdguard-lock/bin/pip install --quiet '.[dev,bench]'
	/tmp/crdguard-lock/bin/pip freeze --exclude crdguard > requirements.lock

clean:
	rm -rf $(VENV) $(RUN_DIR) build dist *.egg-info
