# Minqing task runner. CI calls these targets verbatim (see .ci/run).

PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test run bench faults fuzz screens lint clean

venv: $(STAMP)

# Create the virtual environment only when its interpreter is missing.
$(VPY):
	$(PY) -m venv $(VENV)

# The editable install maps only the top-level packages that exist when it runs, so a
# package created later (its __init__.py newer than the stamp) also triggers a reinstall.
PKG_INITS := $(wildcard schema/__init__.py conflict/__init__.py field_client/__init__.py sync_server/__init__.py)

# (Re)install only when pyproject.toml (or a package's __init__.py) is newer than the stamp.
$(STAMP): pyproject.toml $(PKG_INITS) | $(VPY)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: venv
	HYPOTHESIS_PROFILE=ci $(VPY) -m pytest -q

run: venv
	$(VENV)/bin/sync-server demo --data demo-data

# The peers bench (bench/peers.py) runs PouchDB and Automerge with the machine's Node.js,
# from bench/peers_js/package-lock.json; npm is the only network use, before any timing.
bench: venv
	@if command -v npm >/dev/null; then cd bench/peers_js && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the peers bench will report only ours and the floor (apt-get install nodejs npm)"; fi
	$(VPY) -m bench

# Faults and hostile input at full size (make test runs both in a bounded size):
# docs/faults.md and docs/fuzz.md.
faults: venv
	$(VPY) -m tests.faults --runs 40 --laptops 6 --pull-limit 25

fuzz: venv
	$(VPY) -m tests.fuzz --examples 400

# The screenshots in docs/screenshots/, from the demo county in headless Chromium.
screens: venv
	$(VPY) -m tests.browser.screens docs/screenshots

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info test-output
	find . -type d -name __pycache__ -prune -exec rm -rf {} +
