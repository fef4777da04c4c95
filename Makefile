# The two commands of the README: `make demo` and `make test`.
# Each creates .venv (Python 3.11) when missing and installs the project into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Idle OpenMP threads spinning on 2 shared cores slow torch several-fold; let them sleep.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint install bench clean debian-packages

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# Debian tools some tests drive (OWL API, DICOM validators, a browser): see .ci/debian-packages.txt
debian-packages:
	@.ci/install-debian-packages

demo: $(STAMP) debian-packages
	$(BIN)/lesanet demo -o demo-out

# ruff's lint rules and format, then mypy (their settings are in pyproject.toml); make test runs them first
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) debian-packages lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python -m bench.$$(basename $$f .py) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
