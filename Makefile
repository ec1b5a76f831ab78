# Minqing task runner. CI calls these targets verbatim (see .ci/run).

PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test run bench lint clean

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

bench: venv
	$(VPY) -m bench

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info test-output
	find . -type d -name __pycache__ -prune -exec rm -rf {} +
