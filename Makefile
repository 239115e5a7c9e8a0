# mailpulse: the two commands are `make demo` and `make test`; both do all set-up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup test lint demo soak bench clean

setup:
	@bash tools/setup.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(PY) tools/pkgview.py >/dev/null
	cd build/pkgview && $(CURDIR)/$(VENV)/bin/lint-imports --no-cache --no-logo $(CURDIR)/pyproject.toml
# mypy: the package (as one tree) and the tests, whose helpers (conftest, server_fixtures, ...) are top-level modules
	cd build/pkgview && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml mailpulse $(CURDIR)/tests

test: setup lint
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

soak: setup
	MAILPULSE_SOAK=1 $(PY) -m pytest -n 2 --dist loadgroup -q tests

demo: setup
	$(PY) -m mailpulse.lab.demo

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build sim_build .pytest_cache .mypy_cache .ruff_cache
