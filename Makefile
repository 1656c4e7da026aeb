# Every target installs what it needs into .venv first, from the lock file (uv.lock), so a
# fresh clone needs nothing but Python 3.11-3.13 and gets exactly what CI tested.
# Another interpreter: `make test PYTHON=/path/to/python3.13` (the venv is made again for it).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
UV_VERSION     := 0.13.9
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
STAMP  := $(VENV)/.installed-python$(PYTHON_VERSION)

.DEFAULT_GOAL := help
.PHONY: help run demo stack restart-rolling serve migrate test test-fast fuzz bench lint fmt lock upgrade clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Monogram needs Python 3.11 or newer: $(PYTHON) is " + sys.version.split()[0])'
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PYTHON_VERSION)" ]; then \
		echo "$(VENV) holds another Python: making it again with $(PYTHON) ($(PYTHON_VERSION))"; rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked dependencies into $(VENV) (Python $(PYTHON_VERSION))"
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, every process (each image worker,
	@# each test subprocess) would otherwise compile aiohttp and friends again at start.
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --quiet --locked --inexact --extra dev --compile-bytecode
	@rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)  ## start PostgreSQL, S3 (and its job queue), the service on :8080 and media workers
	$(PY) -m app local

demo: $(STAMP)  ## fill a running `make run` with demo people, photos and likes; prints the logins
	$(PY) -m app demo

WORKERS ?= 3
stack: $(STAMP)  ## the seed's topology: WORKERS=3 service processes behind Caddy on :8080
	$(PY) -m app stack --processes $(WORKERS)

restart-rolling: $(STAMP)  ## replace the processes of a running `make stack` one at a time
	$(PY) -m app restart-rolling

serve: $(STAMP)  ## start only the service, against DATABASE_URL and S3_ENDPOINT_URL
	$(PY) -m app serve

migrate: $(STAMP)  ## apply pending migrations in sql/migrations to DATABASE_URL
	$(PY) -m app migrate

# Two workers, each taking whole files (their fixtures and servers are per file or session).
test: lint  ## lint, then the whole test suite against real PostgreSQL and S3 (moto)
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: lint  ## the inner loop: the suite without the tests marked slow
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

BENCH_SIZE ?= default
bench: $(STAMP)  ## every bench scenario on a local stack; writes bench/results/report-*.md
	$(PY) -m bench --size $(BENCH_SIZE) all

FUZZ_CASES ?= 5000
SCHEMATHESIS_SECONDS ?= 600
HYPOTHESIS_EXAMPLES ?= 2000
fuzz: $(STAMP)  ## the generated-input tests with long budgets (FUZZ_CASES, SCHEMATHESIS_SECONDS, ...)
	$(PY) -m pytest -s tests/test_fuzz.py tests/test_openapi.py tests/test_properties.py \
		--fuzz-cases=$(FUZZ_CASES) --schemathesis-seconds=$(SCHEMATHESIS_SECONDS) \
		--hypothesis-examples=$(HYPOTHESIS_EXAMPLES)

lint: $(STAMP)  ## ruff and mypy
	$(PY) -m ruff check app tests bench
	$(PY) -m ruff format --check app tests bench
	$(PY) -m mypy

fmt: $(STAMP)  ## rewrite the code in the house style
	$(PY) -m ruff check --fix app tests bench
	$(PY) -m ruff format app tests bench

lock: $(STAMP)  ## re-resolve uv.lock after editing pyproject.toml (keeps the other pins)
	$(UV) lock

upgrade: $(STAMP)  ## move every dependency to its newest allowed release in uv.lock
	$(UV) lock --upgrade

clean:  ## remove the virtualenv and caches (keeps .local/, your data)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
