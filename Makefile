# Two commands on a fresh machine: `make run` (the default smoke suite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUITE ?= smoke
STAMP := $(VENV)/.installed
SCRATCH ?= .poisonbench-scratch

.PHONY: install run plan test test-all bench gpu-check leaderboard plots verify submit clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## compute the default (smoke) suite into a scratch folder, render its board, compare with the committed numbers
	$(PY) -m benchmark run --suite $(SUITE) --results-dir $(SCRATCH)/results --board $(SCRATCH)/README.md --compare leaderboard/results

plan: $(STAMP)
	$(PY) -m benchmark plan --suite $(SUITE)

# Results a branch adds or changes relative to main are re-computed by the check (benchmark/verify.py).
BASE ?= $(shell git rev-parse --verify -q main >/dev/null && echo main)

test: $(STAMP)  ## lint and types, the fast tests (what CI runs) with the leaderboard check among them (tests/test_board_check.py)
	$(PY) -m ruff check .
	$(PY) -m mypy
	POISONBENCH_CHECK_BASE=$(BASE) $(PY) -m pytest -m "not slow" -q -n auto --dist worksteal

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -q

bench: $(STAMP)  ## pytest-benchmark speed benchmarks
	$(PY) -m pytest tests/benchmarks -q --benchmark-enable -m "not slow or slow"

gpu-check: $(STAMP)  ## on a CUDA machine: GPU tests, throughput (s/epoch, % of bf16 peak), calibrated estimates, fake full run
	PY=$(PY) .ci/gpu-check $(SCRATCH)/gpu-check

leaderboard: $(STAMP)  ## board, HTML page and figures from the committed results
	$(PY) -m benchmark leaderboard

submit: $(STAMP)  ## a new attack or defense (make submit ID=my_attack): its smoke cells, board, verify, check, PR text
	@test -n "$(ID)" || (echo "usage: make submit ID=<attack or defense id> [SUITES='--suite smoke --suite cpu']" && exit 2)
	$(PY) -m benchmark submit $(ID) $(SUITES)

plots: $(STAMP)  ## figures from the committed results under leaderboard/plots/
	$(PY) -m benchmark plot

verify: $(STAMP)  ## re-compute 20 committed cells of the suite from an empty cache and compare
	$(PY) -m benchmark verify --suite $(SUITE) --sample 20

clean:
	rm -rf .poisonbench-cache $(SCRATCH) .pytest_cache .benchmarks
