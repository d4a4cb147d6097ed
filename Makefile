# kto-mlflow operator — the two commands are `make demo` and `make test`; the rest are their parts.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
NAMESPACE ?=

.PHONY: demo test unit integration bed bed-down bed-status build venv operator lint bench chaos clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt bed/pyproject.toml operator/pyproject.toml trainer/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

build: venv
	bed/system-deps.sh
	bed/build.sh all
	$(PY) -m kto_bed.imagebuild

bed: venv build
	$(PY) -m kto_bed up

bed-down:
	@if [ -x $(PY) ]; then $(PY) -m kto_bed down; else echo "no bed environment"; fi

bed-status: venv
	$(PY) -m kto_bed status

test: venv build
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: venv build
	$(PY) -m pytest -m integration

operator: bed
	. .bed/env && kubectl apply --server-side -f crds/ && \
	  $(PY) -m kto_operator $(if $(NAMESPACE),--namespace $(NAMESPACE),--all-namespaces)

lint: venv
	$(VENV)/bin/ruff check bed operator trainer tests bench demo manifests
	$(VENV)/bin/mypy bed/kto_bed operator/kto_operator trainer/kto_trainer manifests/platform/base/prepare.py

bench: venv build
	$(PY) bench/run_all.py $(if $(SOAK),--soak $(SOAK)) $(if $(PUBLISH),--publish)

chaos: venv build
	$(PY) -m pytest -m chaos --timeout 1800 tests/chaos

demo: venv build
	$(PY) -m kto_bed.demo

clean: bed-down
	rm -rf .bed
