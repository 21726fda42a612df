# The two commands of the README:
#   make run    set up (if needed), then run the chapter's CIFAR-10 exercise as a quick study and write its report
#   make test   set up (if needed), then run the test suite
# Set-up: a virtual environment of the project's own (.venv), torch==2.13.0 first (a local CPU wheel on the
# development machines; elsewhere pip fetches it), then trainwell with its dev extras, then the system
# packages the tests use (Debian's dataset-fashion-mnist; needs root and apt-get, skipped with a note otherwise).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
export TRAINWELL_DATA ?= $(abspath ../shared/datasets)

.PHONY: setup run test lint clean

setup: $(VENV)/.trainwell-installed

$(VENV)/.trainwell-installed: pyproject.toml scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e '.[dev]'
	bash scripts/setup-system.sh
	touch $@

run: setup
	$(VENV)/bin/trainwell run cifar10-exercise --quick

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
