# Every setup step lives here: a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch first, from the pinned CPU wheel; a bare `torch` would pull a multi-GB CUDA build
TORCH_PIN := torch==2.13.0

.PHONY: install test test-all test-copick demo lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

# main tests (the 15 slowest listed), then copick interop in its own venv (~2 min to build
# once); needs no root: the report screenshot test skips without Chromium (`make chromium`)
test: install
	$(PY) -m pytest -q --durations=15
	$(MAKE) test-copick

# opt-in, not needed by `make test`: headless Chromium for the report screenshot test
# (tests/test_report.py, skipped without it); installs it only when missing and only as
# root (about 30 s with apt-get), else says how
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium: install failed; the report screenshot test will be skipped"; \
	else \
		echo "chromium not found: run 'sudo apt-get install chromium' (Debian/Ubuntu) to enable"; \
		echo "the report screenshot test; it is skipped until then"; \
	fi

# copick 1.x pins zarr<3, so its interop tests run in their own venv (torch first, as above)
COPICK_VENV := .venv-copick
COPICK_PY := $(COPICK_VENV)/bin/python
COPICK_STAMP := $(COPICK_VENV)/.installed
OLD_STACK_TESTS := tests/test_io_tomograms.py tests/test_io_picks.py tests/test_scale_predict.py

$(COPICK_STAMP): pyproject.toml Makefile
	test -x $(COPICK_PY) || $(PYTHON) -m venv $(COPICK_VENV)
	$(COPICK_PY) -m pip install -q --upgrade pip
	$(COPICK_PY) -m pip install -q $(TORCH_PIN)
	$(COPICK_PY) -m pip install -q "copick>=1,<2" "pandas<3" pytest
	$(COPICK_PY) -m pip install -q -e .
	touch $(COPICK_STAMP)

# that venv is also our oldest stack (zarr 2, pandas 2): the readers and writers run in it too
test-copick: $(COPICK_STAMP)
	$(COPICK_PY) -m pytest -q -p no:cacheprovider tests/copick_interop
	$(COPICK_PY) -m pytest -q -p no:cacheprovider -k "not star" $(OLD_STACK_TESTS)

test-all: install
	$(PY) -m pytest -q -m ""

# the checks .ci/run makes before the tests (and .pre-commit-config.yaml makes per commit);
# settings in pyproject.toml: [tool.ruff] and [tool.mypy]
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

demo: install
	$(PY) -m cryopick.demo

clean:
	rm -rf $(VENV) .venv-copick .pytest_cache .ruff_cache .mypy_cache
