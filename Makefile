# Set-up is part of every target: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SIZE   ?= small

.PHONY: venv demo test test-slow test-all lint clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; torch/torchvision come from the pinned local wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench,ray,remote]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m salt.demo --size $(SIZE)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check salt dataprep benchmarks tests

clean:
	rm -rf $(VENV) runs cache
