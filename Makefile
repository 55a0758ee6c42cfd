# Two entry points (README quick start): `make demo` runs the main job (the quick grid end to end), `make test` the whole test suite.
# Both create/reuse .venv and install what they need. setup.py imports torch, so the package is installed
# with --no-build-isolation after torch is in the venv.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
TORCHVISION ?= torchvision==0.29.1
# Pinned: another ruff version may format differently, and `make test` checks the formatting.
RUFF ?= ruff==0.17.6
BIN := $(VENV)/bin
# The tests but Ray's run in one process per core (pytest-xdist), at most TEST_WORKERS (0: in this process); the
# Ray tests then run alone, one after another: their kill/resume and budget checks time real Ray start-ups.
TEST_WORKERS ?= 4
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n auto --maxprocesses $(TEST_WORKERS) --dist loadgroup)
# The CUDA toolkit root (its lib64/ holds libcudart.so); the nvcc on PATH may be a wrapper elsewhere.
CUDA_HOME ?= $(shell for d in /usr/local/cuda /usr/local/cuda-*; do [ -e $$d/lib64/libcudart.so ] && echo $$d && break; done)
export CUDA_HOME
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export TORCH_CUDA_ARCH_LIST
# With a C++ compiler present the extension and the Triton interpreter are required, not optional.
HAVE_CXX := $(shell command -v c++ >/dev/null 2>&1 && echo 1)
SOURCES := setup.py pyproject.toml $(shell find csrc rft_fast kernels -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) -not -path 'rft_fast/kernels/*')

.PHONY: demo test test-fast lint install clean

$(BIN)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install "$(TORCH)" "$(TORCHVISION)" timm safetensors tqdm scikit-learn numpy ninja pybind11 pytest pytest-xdist hypothesis pytest-benchmark pyautoattack imagecorruptions-imaug matplotlib pyyaml "ray[tune]" zstandard
	touch $@

$(BIN)/.installed: $(BIN)/.deps $(SOURCES)
	RFT_FAST_REQUIRE_EXT=$(HAVE_CXX) $(BIN)/pip install --no-build-isolation --no-deps .
	touch $@

install: $(BIN)/.installed

# The report is written even when a configuration failed; the demo then exits with the grid's status.
demo: install
	status=0; $(BIN)/rft-fast grid examples/quick.yaml || status=$$?; \
	$(BIN)/rft-fast report --store runs/quick/results.sqlite --out runs/quick/report && exit $$status

# The linter and the formatter (ruff, configured in pyproject.toml) must be clean before the tests run.
$(BIN)/ruff: $(BIN)/.deps
	$(BIN)/pip install "$(RUFF)"

lint: $(BIN)/ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	RFT_FAST_REQUIRE_BACKENDS=$(if $(HAVE_CXX),cpp$(comma)triton,) $(BIN)/pytest -q $(PARALLEL) -m "not ray" --durations=15 tests
	$(BIN)/pytest -q -m ray --durations=10 tests

# The inner loop: everything but the tests marked slow or ray (pyproject.toml's markers).
test-fast: install
	$(BIN)/pytest -q $(PARALLEL) -m "not slow and not ray" tests

clean:
	rm -rf build dist *.egg-info $(VENV)

# On a machine with a CUDA GPU and its own torch / triton / timm (no venv, no internet): builds the extension in
# place, runs the GPU tests and every bench suite in about 10 minutes, writes bench/results/*.json (docs/benchmarks.md,
# "Prepared GPU run"). `python3 bench/gpu_run.py --dry` prints the plan.
.PHONY: gpu-bench
gpu-bench:
	$(PYTHON) bench/gpu_run.py --python $(PYTHON)

comma := ,
