# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out
DEMO_EVENTS ?= 300000

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo test lint format clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(PY) $(DEMO_DIR) $(DEMO_EVENTS)

lint: $(STAMP)
	$(PY) -m black --check sdm_tf pipelines launch tests benchmarks
	$(PY) -m ruff check sdm_tf pipelines launch tests benchmarks

format: $(STAMP)
	$(PY) -m black sdm_tf pipelines launch tests benchmarks
	$(PY) -m ruff check --fix sdm_tf pipelines launch tests benchmarks

test: lint
	$(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
