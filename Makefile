# scatterhoard: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 11211
PYTEST_ARGS ?=
# the modules setup.py compiles with mypyc (listed once, in scatterhoard/_build.py): editing one rebuilds
COMPILED_SRC := $(shell python3 -c "exec(open('scatterhoard/_build.py').read()); print(' '.join(sources()))" 2>/dev/null)

.PHONY: run test lint typecheck unit system-deps bench build clean

# installs editable; setup.py compiles the hot modules with mypyc (pure Python if it cannot)
$(STAMP): pyproject.toml setup.py $(COMPILED_SRC)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c 'from scatterhoard import _build; print("scatterhoard:", _build.describe())'
	touch $(STAMP)

## build: (re)compile the hot modules after editing them (make run/test do this by themselves)
build: $(STAMP)

## run: create .venv, install, start `hoard server` on 127.0.0.1:11211
run: $(STAMP)
	$(VENV)/bin/hoard server -l $(HOST) -p $(PORT) -v

## system-deps: Debian memcached, redis-server, libmemcached-tools, nutcracker (apt-get as root)
system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check scatterhoard tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	HOARD_REQUIRE_ALL=1 $(PY) -m pytest -q $(PYTEST_ARGS)

## test: everything CI runs: deps, ruff, mypy (strict), the whole suite
test: $(STAMP) system-deps lint typecheck unit

bench: $(STAMP) system-deps
	$(PY) benchmarks/bench_server.py

clean:
	rm -rf $(VENV) build *.egg-info scatterhoard/*/*.so *__mypyc*.so .mypy_cache .ruff_cache .pytest_cache .hypothesis
