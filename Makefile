# Two commands on a fresh machine: `make run` serves the shipped model on :8000, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
CONSTRAINTS := requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test bench bench-http tune install-serve install-dev system-tools train-en-de train-de-en data clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Serving: onnxruntime and friends only, no torch.
$(VENV)/.serve-installed: pyproject.toml setup.py $(wildcard engine/kernels/*) $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -e .
	touch $@

# Everything: training (torch CPU), export, benchmark, tests.
$(VENV)/.dev-installed: pyproject.toml setup.py $(wildcard engine/kernels/*) $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -e ".[train,bench,tune,test,import]"
	touch $@ $(VENV)/.serve-installed

install-serve: $(VENV)/.serve-installed
install-dev: $(VENV)/.dev-installed

run: install-serve
	$(VENV)/bin/translator serve --host $(HOST) --port $(PORT)

# promtool (Prometheus config/rules checks and a real Prometheus for the dashboard test), nginx (load balancer
# config check), msgfmt (.mo fixtures), chromium with its driver (the web page test) and wrk and hey (load
# generators: make bench-http, translator load --generator wrk, tests/test_loadtest.py) come from Debian;
# installed when missing and we are root.
system-tools:
	@if ! command -v promtool >/dev/null || ! command -v nginx >/dev/null || ! command -v msgfmt >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
	    || ! command -v wrk >/dev/null || ! command -v hey >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus nginx-light gettext chromium chromium-driver wrk hey >/dev/null; \
	  else echo "note: install prometheus, nginx-light, gettext, chromium, chromium-driver, wrk and hey for the deploy, web page and load tests (they skip otherwise) and make bench-http"; fi; \
	fi

test: install-dev system-tools
	$(PY) -m pytest -q

# Containers with podman (README "Deploy"). `make image` builds translator:0.1.0-cpu from deploy/Dockerfile on a
# Debian base made by mmdebstrap (no registry needed); `make test-deploy` builds every image from the committed
# files (IMAGE_SOURCE=HEAD; worktree for uncommitted edits) and runs tests/deploy/run.py: the image, the compose
# stack with failover, podman kube play; report in results/deploy/report.json. podman, runc, mmdebstrap,
# catatonit (kube play's pause image), iptables, netavark and aardvark-dns come from Debian, installed when
# missing and we are root; the podman settings they need are passed per command (deploy/podman/env.sh).
.PHONY: image test-deploy deploy-tools
DEPLOY_PACKAGES := podman runc mmdebstrap catatonit iptables netavark aardvark-dns
IMAGE ?= translator:0.1.0-cpu
IMAGE_SOURCE ?= worktree
DEPLOY_TEST_ARGS ?=

deploy-tools:
	@missing=$$(for p in $(DEPLOY_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "note: install $$missing (Debian packages) for the container images and tests"; fi; \
	fi

image: deploy-tools | $(VENV)/bin/python
	IMAGE=$(IMAGE) IMAGE_SOURCE=$(IMAGE_SOURCE) PYTHON=$(PY) deploy/podman/images.sh translator

$(VENV)/.deploy-test-installed: requirements/deploy-test.txt $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -r requirements/deploy-test.txt
	touch $@

test-deploy: install-dev deploy-tools $(VENV)/.deploy-test-installed
	IMAGE=$(IMAGE) $(PY) -m tests.deploy.run $(DEPLOY_TEST_ARGS)

# Fuzzing (docs/reliability.md): schemathesis on every route, at least 1,000 cases, and the text-path
# property tests with more examples than `make test` runs. Counts: results/reliability/fuzz.json.
.PHONY: fuzz soak
fuzz: install-dev
	FUZZ_EXAMPLES=300 FUZZ_MIN_CASES=1000 FUZZ_REPORT=results/reliability/fuzz.json TEXT_EXAMPLES=300 \
	  $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_api.py tests/test_text_properties.py

# Overload (4x capacity, 60 s), memory soak (20,000 requests, lengths 2..max tokens, at most an hour; its curve
# in soak.png) and fuzzing, each on its own server on 127.0.0.1; reports in results/reliability/, figures in
# docs/reliability.md. Each runner exits 1 when one of its checks fails; all three run, and the target fails
# if any did.
soak: install-dev
	$(PY) -m bench.overload --duration 60 --json results/reliability/overload.json; o=$$?; \
	$(PY) -m bench.soak --requests 20000 --max-duration 3600 --json results/reliability/soak.json; s=$$?; \
	$(PY) -m bench.soak_plot results/reliability/soak.json --out results/reliability/soak.png; \
	$(MAKE) --no-print-directory fuzz; f=$$?; \
	exit $$(( o || s || f ))

bench: install-dev
	$(PY) -m bench.engines

# The service under wrk (32 connections, greedy and beam 4, 20 s each) against CTranslate2 int8 offline on the same
# sentences (README "Load benchmark"): results/bench_http.json and .txt. Server settings for every server with
# BENCH_HTTP_ARGS="--env TRANSLATOR_X=V", several servers in one run with "--variant NAME:TRANSLATOR_X=V,..."
# (e.g. --variant continuous:TRANSLATOR_SCHEDULER=continuous --variant batch:TRANSLATOR_SCHEDULER=batch).
BENCH_HTTP_ARGS ?=
bench-http: install-dev system-tools
	$(PY) -m bench.http_load $(BENCH_HTTP_ARGS)

# Batching and length tuning of the shipped models (README "Tuning"): report.md, PNG plots, tuning.json and
# recommended.env in $(TUNE_OUT). About 10 minutes on an idle machine; TUNE_ARGS=--quick checks the setup in one
# or two, and any `translator tune` option goes there (e.g. TUNE_ARGS="--p95-ms 300 --concurrency 1,8,32").
TUNE_OUT ?= results/tuning
TUNE_ARGS ?=
tune: install-dev
	$(PY) -m tuning.tune --models-dir models --out $(TUNE_OUT) $(TUNE_ARGS)

data: install-dev
	$(PY) -m model.data debian --out data/en-de

train-en-de: install-dev
	$(PY) -m model.train --data data/en-de --out checkpoints/en-de --src-lang en --tgt-lang de

train-de-en: install-dev
	$(PY) -m model.train --data data/en-de --out checkpoints/de-en --src-lang de --tgt-lang en

clean:
	rm -rf $(VENV) .pytest_cache
