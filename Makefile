# Two commands on a fresh machine: `make run` serves the shipped model on :8000, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
CONSTRAINTS := requirements/constraints.txt
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test bench install-serve install-dev train-en-de train-de-en data clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Serving: onnxruntime and friends only, no torch.
$(VENV)/.serve-installed: pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -e .
	touch $@

# Everything: training (torch CPU), export, benchmark, tests.
$(VENV)/.dev-installed: pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -e ".[train,bench,test]"
	touch $@ $(VENV)/.serve-installed

install-serve: $(VENV)/.serve-installed
install-dev: $(VENV)/.dev-installed

run: install-serve
	$(VENV)/bin/translator serve --host $(HOST) --port $(PORT)

test: install-dev
	$(PY) -m pytest -q

bench: install-dev
	$(PY) -m bench.engines

data: install-dev
	$(PY) -m model.data debian --out data/en-de

train-en-de: install-dev
	$(PY) -m model.train --data data/en-de --out checkpoints/en-de --src-lang en --tgt-lang de

train-de-en: install-dev
	$(PY) -m model.train --data data/en-de --out checkpoints/de-en --src-lang de --tgt-lang en

clean:
	rm -rf $(VENV) .pytest_cache
