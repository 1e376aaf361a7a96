# Two entry points: `make demo` (train on the embedded digits, then sample a grid) and `make test`.
# Both create .venv and install the package into it on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheels differ by architecture; on x86_64 these two lie on the local disk.
ifeq ($(shell uname -m),aarch64)
TORCH := torch==2.9.1 torchvision==0.24.1
else
TORCH := torch==2.14.1 torchvision==0.29.1
endif
DEMO_DIR ?= runs/demo

.PHONY: install demo test test-fast bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/ddpm train --dataset digits --out $(DEMO_DIR)
	$(VENV)/bin/ddpm sample --run $(DEMO_DIR) --n 64 --seed 0 \
		--out $(DEMO_DIR)/grid.png --progressive $(DEMO_DIR)/progressive.png

# the tests of benchmarks/alternatives.py need the two alternatives (torch held at the pin above)
$(VENV)/.compare: $(VENV)/.installed
	printf '%s\n' $(TORCH) > $(VENV)/torch-pin.txt
	$(PY) -m pip install --quiet -c $(VENV)/torch-pin.txt -e '.[dev,compare]'
	touch $@

test: install $(VENV)/.compare
	$(PY) -m pytest

# the tests not marked slow (no training runs, no subprocesses): under a minute on 2 cores
test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(VENV)/bin/ddpm bench --preset digits

# ruff, then mypy (strict on src/ddpm; its configuration and relaxations are in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs build src/*.egg-info
