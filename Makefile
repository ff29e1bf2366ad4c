# Two commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow check bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run: make PYTHON=python3.X (3.10+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e .
	touch $(STAMP)

$(VENV)/.installed-dev: $(STAMP)
	$(PIP) install -q -e '.[serve,postgres,tune,track,distributed,demand,privacy,ann,excel]' pytest pytest-timeout hypothesis ruff mypy pandas-stubs httpx schemathesis playwright pyyaml
	touch $(VENV)/.installed-dev

demo: $(STAMP)
	$(VENV)/bin/taxonomist demo --workdir runs/demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow

check: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks docs
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/sparse_vs_baselines.py --data ../shared/data
	$(PY) benchmarks/tiers.py --data ../shared/data

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
