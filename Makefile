# Quick start: `make demo` runs the main job; `make test` runs the test suite.
# Both create .venv and install pinned dependencies (torch==2.13.0 CPU first) when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# packages whose declared dependencies would replace the CPU torch: install them alone
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $$(sed -n 's/^# nodeps: //p' requirements.txt)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: setup
	$(PY) -m modalrec quickstart --out runs/quickstart

# Headless Chromium for the report's browser test (Debian packages; needs root and apt).
browser:
	@command -v chromedriver >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "warning: could not install chromium; the report browser test will be skipped"; }

test: setup browser
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check src tests benchmarks

bench: setup
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
