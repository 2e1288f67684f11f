# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install system-deps demo dashboard test lint bench clean compile uncompile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,stats]'
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

test: install system-deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache examples/.demo

# Optional: the embedded router's hot path compiled with mypyc (needs gcc and the Python
# headers; see setup.py). The .so files land next to the sources in src/ and take
# precedence over them: after editing those modules, `make compile` again, or
# `make uncompile` to run the .py files.
compile: install
	ENTREGA_COMPILE=1 $(PY) -m pip install -q -e '.[test,stats]'
	$(PY) -c "import entrega.routers.embedded.proxy as p; print('router compiled:', p.__file__)"

uncompile:
	rm -f src/entrega/routers/embedded/*.so src/entrega_router__mypyc*.so
