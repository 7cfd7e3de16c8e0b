# The README's set-up commands. Each works on a fresh machine with only Python 3.11 present.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# torch==2.13.0 takes the CPU wheel that lies on disk; a looser spec downloads a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint format bench install clean container-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PIP) install "$(TORCH_PIN)"
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kneel demo --out demo_output

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests benchmarks examples
	$(VENV)/bin/ruff format src tests benchmarks examples

bench: $(STAMP)
	$(PY) -m benchmarks

# Builds the CPU image with podman on a local Debian base and checks it against kneel predict (root; docs/containers.md).
container-test: $(STAMP)
	PYTHON=$(PY) bash docker/ci_build_and_test.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
