# Two commands for a new user (README.md):
#   make reproduce   set up .venv if missing, then regenerate the paper (default profile)
#   make test        set up .venv if missing, then run the test suite
# Data: TARDIFF_DATA_DIR=/path/to/physionet2012 (else downloaded from PhysioNet into ~/.cache/tardiff).

PYTHON ?= python3
VENV   ?= .venv
PROFILE ?= default
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: reproduce test docs bench sync-notebooks clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: pip picks the build for this platform.
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

reproduce: $(STAMP)
	$(PY) -m tardiff.reproduce --profile $(PROFILE) $(if $(TARDIFF_DATA_DIR),--data-dir $(TARDIFF_DATA_DIR),)

test: $(STAMP)
	$(PY) -m pytest -q tests

# the tables and marked numbers of README.md and docs/, written from results/ (tardiff/report.py)
docs: $(STAMP)
	$(PY) -m tardiff.report

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

sync-notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.py

clean-venv:
	rm -rf $(VENV)
