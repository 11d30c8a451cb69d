# downcycle — set-up, demo, tests, benchmarks. Every target installs what it needs into $(VENV).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine pass any torch in range, e.g. make demo TORCH='torch>=2.4'.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/downcycle demo --out demo-out

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_cut.py --sizes 1,4
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_analyze.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_eval.py --e2e

clean:
	rm -rf $(VENV) demo-out benchmarks/out
