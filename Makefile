# anomaly-gym — every target does its own set-up in ./.venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench clean

# The CPU build of torch goes in first, pinned, so that resolving the other
# dependencies does not pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[test,stream,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/anomaly-gym demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q
	$(PY) -m pytest -m ray -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(VENV)/bin/anomaly-gym bench featurizer

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
