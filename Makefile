# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install system-deps demo dashboard test lint bench clean compile uncompile

# The router's hot path is compiled by mypyc at install (setup.py): a change to one of
# its modules rebuilds it.
HOT_PATH := $(addprefix src/entrega/routers/embedded/,\
	wire.py metrics.py cohort.py pool.py table.py upstream.py exchange.py proxy.py)

$(VENV)/.installed: pyproject.toml setup.py $(HOT_PATH)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,stats]'
	$(PY) -c "from entrega.routers.embedded import build; \
		print('router build:', 'compiled' if build.compiled_modules() else 'pure Python')"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/demo.py

# The dashboard on the history `make demo` left behind (Ctrl-C to stop; then
# `$(VENV)/bin/entrega down -c examples/.demo/entrega.yaml` stops the app it restarted).
dashboard: install
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
	ENTREGA_PURE_PYTHON=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/routers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache examples/.demo

# Rebuild the compiled router now; or remove it, so that the .py files run (until the next
# `make install` after a change: ENTREGA_PURE_PYTHON=1 picks the .py files at run time).
compile: install
	$(PY) -m pip install -q -e '.[test,stats]'

uncompile:
	rm -f src/entrega/routers/embedded/*.so src/entrega_router__mypyc*.so
