# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install install-demo system-deps demo demo-services dashboard test lint bench clean compile uncompile

# The router's hot path, every module of dataplane/http/, is compiled by mypyc at install
# (setup.py): a change to one of them rebuilds it.
HOT_PATH := $(filter-out %/__init__.py,$(wildcard src/entrega/dataplane/http/*.py))

# Two stamps: the demo needs entrega and its `stats` extra (scipy: the demo's latency
# analysis is the mann-whitney judge); the tests add the `test` extra (pytest, mypy,
# playwright...), which is most of the download. `make demo` on a fresh machine installs
# only the first; `make test` adds the second on top, without rebuilding entrega.
$(VENV)/.installed-demo: pyproject.toml setup.py $(HOT_PATH)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[stats]'
	$(PY) -c "from entrega.dataplane import build; \
		print('router build:', 'compiled' if build.compiled_modules() else 'pure Python')"
	touch $@

# The `test` extra's requirements, read from pyproject.toml: `pip install -e '.[test]'`
# would build (and compile) entrega a second time for nothing.
$(VENV)/.installed: $(VENV)/.installed-demo pyproject.toml
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))\
		['project']['optional-dependencies']['test']))" > $(VENV)/test-requirements.txt
	$(PY) -m pip install -q -r $(VENV)/test-requirements.txt
	touch $@

install-demo: $(VENV)/.installed-demo

install: $(VENV)/.installed

demo: install-demo
	$(PY) examples/demo.py

# Three services of one team (an API, a web front, a worker) delivered by one server:
# release groups, a single-app release, and a group rolled back on its callers' evidence.
demo-services: install-demo
	$(PY) examples/services_demo.py

# The dashboard on the history `make demo` left behind (Ctrl-C to stop; then
# `$(VENV)/bin/entrega down -c examples/.demo/entrega.yaml` stops the app it restarted).
dashboard: install-demo
	$(PY) -m entrega server -c examples/.demo/entrega.yaml

lint: install
	$(VENV)/bin/ruff check src tests examples $(wildcard bench)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Real servers the tests run against (prometheus, haproxy, chromium...), from Debian.
system-deps:
	bash scripts/install-system-deps.sh

# The suite runs the compiled router (what pip install gives); the router's own tests run
# a second time on the pure-Python fallback.
test: install system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider
	ENTREGA_PURE_PYTHON=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/dataplane tests/routers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache examples/.demo examples/.services-demo

# Rebuild the compiled router now; or remove it, so that the .py files run (until the next
# `make install` after a change: ENTREGA_PURE_PYTHON=1 picks the .py files at run time).
compile: install
	$(PY) -m pip install -q -e '.[test,stats]'

uncompile:
	rm -f src/entrega/dataplane/http/*.so src/entrega_router__mypyc*.so
