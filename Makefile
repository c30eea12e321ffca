# The course's two commands (see README.md):
#   make run    build everything, then execute every notebook with papermill into runs/$(PROFILE)/
#   make test   build everything, then pytest: unit tests and nbval over notebooks/
# Nothing is installed outside .venv/ (and .venv-cuda/ for `make check-cuda`).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
KERNEL_NAME := tl-course

PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.requirements-installed
BUILD_STAMP := $(VENV)/.extension-built
EXTENSION_SOURCES := setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu)

.PHONY: install run test lab check-cuda benchmark clean help
.DEFAULT_GOAL := help

help:
	@echo "make run [PROFILE=quick|full|gpu]   build, then run every notebook into runs/<profile>/"
	@echo "make test                           build, then unit tests + nbval over notebooks/"
	@echo "make lab                            JupyterLab with the course kernel ($(KERNEL_NAME))"
	@echo "make benchmark                      LSTM benchmarks (about 5 min on 2 cores), JSON into benchmarks/results/"
	@echo "make check-cuda                     compile (no run) the CUDA kernels in .venv-cuda/"
	@echo "make install                        only the bootstrap: .venv, requirements, extension, kernel"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL_NAME) --display-name "Python 3 (tl-course)"
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(EXTENSION_SOURCES)
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	$(PY) -c "import tl_core.ops, tl_core._C as C; print('tl_core._C built; CUDA kernels:', C.with_cuda, '| CPU kernels:', C.cpu_kernel_isa())"
	touch $@

install: $(BUILD_STAMP)

run: install
	$(PY) -m tl_core.run --profile $(PROFILE)

test: install
	$(PY) -m pytest

lab: install
	$(VENV)/bin/jupyter lab notebooks/

# benchmarks/lstm.py: FusedLSTM against nn.LSTM (JSON into benchmarks/results/, a table on stdout). It reads the IMDB
# lengths through the data path rule (TL_DATA_DIR), never downloading, and says so in the JSON when it falls back.
benchmark: install
	$(PY) benchmarks/lstm.py
	@if [ -f benchmarks/cell.py ]; then $(PY) benchmarks/cell.py; fi

# Compile and link the CUDA kernels for Hopper (sm_90) against torch's CUDA 13.0 build, in a venv of their own.
# Nothing is run: there may be no GPU. The folder of the real toolkit is found by setup.py (nvcc may be a wrapper).
CUDA_VENV ?= .venv-cuda
CUDA_TORCH ?= torch==2.14.1
CUDA_PY := $(CUDA_VENV)/bin/python
CUDA_STAMP := $(CUDA_VENV)/.requirements-installed

$(CUDA_STAMP):
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install $(CUDA_TORCH) $$(grep -E '^(numpy|setuptools|wheel|ninja|pybind11)==' requirements.txt)
	touch $@

check-cuda: $(CUDA_STAMP)
	rm -rf build/cuda-check
	TL_CORE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=2 $(CUDA_PY) setup.py -q build_ext \
	    --build-temp build/cuda-check/temp --build-lib build/cuda-check/lib
	@ls build/cuda-check/lib/tl_core/_C*.so
	@echo "check-cuda: the CUDA extension compiled and linked for sm_90"

clean:
	rm -rf build tl_core/*.so *.egg-info $(BUILD_STAMP)
