# qornn: `make demo` and `make test` work on a fresh clone; both create .venv/ on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.qornn-installed

.PHONY: setup demo test docs tutorial clean

setup: $(STAMP)

# torch is pinned to the CPU build first so that nothing resolves a CUDA wheel.
# constraints.txt pins every other package to the versions the tests certify (reproducible set-up).
$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,docs]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/qornn demo

test: setup
	$(PY) -m pytest -q

# the documentation site (mkdocs.yml) into site/: open site/index.html; needs no network
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# re-run the commands of docs/tutorial.md and write their real outputs and plots into it (minutes)
tutorial: setup
	$(PY) docs/_tools/tutorial.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache site
