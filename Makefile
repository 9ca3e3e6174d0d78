# Turnout: `make serve` runs the daemon on the repo's router.toml; `make test` runs everything.
# Both set themselves up on a fresh machine: a .venv with the package and its tools.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint unit bench bench-smoke soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/turnout serve

lint: $(STAMP)
	$(BIN)/ruff check router cache tests $(wildcard bench)
	$(BIN)/mypy

# The whole suite, integration tests included, against a redis-server started for it.
test: lint
	scripts/with-redis.sh $(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not e2e"

# Ten minutes of mixed traffic with faults; RSS, fds and tasks each minute, into bench/SOAK.md.
soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration 600 --interval 60 --report bench/SOAK.md

# The benchmark (bench/README.md): every scenario, repeated; rewrites bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# About ten seconds: every scenario once, capped, to prove the harness works; writes nothing.
bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
