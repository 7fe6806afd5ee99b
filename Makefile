# Set-up is part of every target: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SIZE   ?= small
# CPU=avx2: run as a CPU without native bf16 (torch's, oneDNN's and MKL's kernels held to AVX2), on one that has it
CPU    ?=
ifeq ($(CPU),avx2)
export ATEN_CPU_CAPABILITY = avx2
export ONEDNN_MAX_CPU_ISA = AVX2
export MKL_ENABLE_INSTRUCTIONS = AVX2
else ifneq ($(CPU),)
$(error CPU=$(CPU): the one CPU kind to emulate is avx2)
endif

.PHONY: venv demo test test-slow test-all lint clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; torch/torchvision come from the pinned local wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench,ray,remote,hf]'
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
