# The course's two commands (see README.md):
#   make run    build everything, then execute every notebook with papermill into runs/$(PROFILE)/
#   make test   build everything, then the fast tier: unit tests and the smoke chain (every notebook on the smoke
#               profile, its metrics.json checked); a few minutes, for every commit
#   make test-notebooks   the long tier: every committed notebook re-executed under strict nbval, and the slow
#               unit tests; run by CI (.ci/run)
#   make notebooks   regenerate the committed notebooks from one run of the quick profile (and the appendix)
#   make assignments / make book   the classroom (nbgrader student versions) and the course website
# Nothing is installed outside .venv/ (and .venv-cuda/ for `make check-cuda`), except Debian's chromium for
# `make test-book`.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
KERNEL_NAME := tl-course

PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.requirements-installed
BUILD_STAMP := $(VENV)/.extension-built
EXTENSION_SOURCES := setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/cuda/*.cu)

.PHONY: install run test test-notebooks notebooks lab check-cuda benchmark clean help assignments test-assignments \
        book test-book chromium
.DEFAULT_GOAL := help

help:
	@echo "make run [PROFILE=quick|full|gpu]   build, then run every notebook into runs/<profile>/"
	@echo "make test                           build, then unit tests + the smoke chain (every notebook, tiny profile)"
	@echo "make test-notebooks                 strict nbval of every committed notebook, and the slow unit tests (CI)"
	@echo "make notebooks                      rerun the quick profile into a fresh folder; its notebooks become notebooks/"
	@echo "make lab                            JupyterLab with the course kernel ($(KERNEL_NAME))"
	@echo "make benchmark                      LSTM benchmarks (about 5 min on 2 cores), JSON into benchmarks/results/"
	@echo "make check-cuda                     compile (no run) the CUDA kernels in .venv-cuda/"
	@echo "make install                        only the bootstrap: .venv, requirements, extension, kernel"
	@echo "make assignments [CLASSROOM=dir]    student versions of notebooks/assignments/ (nbgrader) in classroom/release/"
	@echo "make test-assignments               autograde every assignment: instructor version and student version"
	@echo "make book [RUN_DIR=runs/quick]      the course website from the committed notebooks, into build/book/html/"
	@echo "make test-book                      the website in headless Chromium; screenshots in build/book/screenshots/"
	@echo "make chromium                       install Debian's chromium for test-book (needs root), if it is missing"
	@echo "make clean                          remove the build folders and the compiled extension"

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

# The fast tier (pyproject.toml: tests/ without the tests marked slow, classroom or browser). Its smoke chain
# (tests/test_smoke_chain.py) needs the datasets on TL_DATA_DIR and skips, saying so, without them. One thread per
# process by default: on a shared machine, PyTorch's threads waiting for a busy core slow a test many times over
# (README: "Sharing a machine"); TEST_THREADS=2 on an idle one.
TEST_THREADS ?= 1
test: install
	OMP_NUM_THREADS=$(TEST_THREADS) MKL_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest

# The long tier: the committed notebooks (numbered, instructor sources, solutions) re-executed and compared output
# by output, except what notebooks/sanitize.cfg masks and cells tagged nbval-ignore-output; then the slow unit tests.
NBVAL := --nbval --nbval-sanitize-with=notebooks/sanitize.cfg --nbval-kernel-name=$(KERNEL_NAME) \
         --nbval-cell-timeout=1800
test-notebooks: install
	$(PY) -m pytest $(NBVAL) notebooks
	$(PY) -m pytest -m slow tests

# One run of the quick profile, in order, into a fresh folder; then its executed notebooks (checked: complete, one
# run id, the profile's own parameters, unedited since) replace notebooks/*.ipynb. Commit them together.
# The appendix (08, which the quick chain does not run) runs after it into the same folder, on the same artifacts
# and with its own defaults, so that its stored outputs belong to the same run (about 2.5 min).
APPENDIX := 08
notebooks: install
	@run_dir=runs/notebooks-$$(date +%Y%m%d-%H%M%S) && \
	    $(PY) -m tl_core.run --profile quick --run-dir $$run_dir && \
	    $(PY) -m tl_core.run --profile quick --only $(APPENDIX) --run-dir $$run_dir && \
	    $(PY) -m tl_core.run commit $$run_dir

lab: install
	$(VENV)/bin/jupyter lab notebooks/

# benchmarks/lstm.py: FusedLSTM against nn.LSTM (JSON into benchmarks/results/, a table on stdout). It reads the IMDB
# lengths through the data path rule (TL_DATA_DIR), never downloading, and says so in the JSON when it falls back.
benchmark: install
	$(PY) benchmarks/lstm.py
	@if [ -f benchmarks/cell.py ]; then $(PY) benchmarks/cell.py; fi

# Compile and link the CUDA kernels for Hopper (sm_90) against torch's CUDA 13.0 build, in a venv of their own.
# Nothing is run: there may be no GPU. The folder of the real toolkit is found by setup.py (nvcc may be a wrapper).
# The torch is the version requirements.txt pins (what the users run), as PyPI's CUDA build: `===` matches that
# exact version string, so pip cannot take a local CPU build (2.13.0+cpu in the course machines' wheel folder).
# The stamp names the version: a new pin reinstalls.
CUDA_VENV ?= .venv-cuda
TORCH_PIN := $(shell sed -n 's/^torch==//p' requirements.txt)
CUDA_TORCH ?= torch===$(TORCH_PIN)
CUDA_PY := $(CUDA_VENV)/bin/python
CUDA_STAMP := $(CUDA_VENV)/.requirements-installed-torch-$(TORCH_PIN)

$(CUDA_STAMP):
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install "$(CUDA_TORCH)" $$(grep -E '^(numpy|setuptools|wheel|ninja|pybind11)==' requirements.txt)
	$(CUDA_PY) -c "import torch; v = torch.__version__; assert v.split('+')[0] == '$(TORCH_PIN)' and torch.version.cuda, \
	    f'.venv-cuda has torch {v} (CUDA {torch.version.cuda}), not the CUDA build of $(TORCH_PIN)'"
	touch $@

check-cuda: $(CUDA_STAMP)
	rm -rf build/cuda-check
	TL_CORE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=2 $(CUDA_PY) setup.py -q build_ext \
	    --build-temp build/cuda-check/temp --build-lib build/cuda-check/lib
	@ls build/cuda-check/lib/tl_core/_C*.so
	@echo "check-cuda: the CUDA extension compiled and linked for sm_90"

# ---- the classroom and the reader ----------------------------------------------------------------------------------
# requirements-classroom.txt goes into the same .venv (nbgrader must run the course kernel), constrained by
# requirements.txt so that no course pin moves, and pip check must pass.
CLASSROOM ?= classroom
RUN_DIR ?=
CLASSROOM_STAMP := $(VENV)/.classroom-installed

$(CLASSROOM_STAMP): requirements-classroom.txt $(DEPS_STAMP)
	$(PY) -m pip install -r requirements-classroom.txt -c requirements.txt
	$(PY) -m pip check
	touch $@

# An nbgrader course directory in $(CLASSROOM)/ (git-ignored, kept by `make clean`: gradebook and submissions live
# there): source/ copied from notebooks/assignments/, release/ the student versions.
assignments: $(CLASSROOM_STAMP)
	$(PY) -m tl_core.classroom release --course-dir $(CLASSROOM)

# Runs the chapter notebooks the assignments read (quick profile) in a temporary run directory, then autogrades
# each assignment twice. Needs the datasets: TL_DATA_DIR.
test-assignments: install $(CLASSROOM_STAMP)
	@test -n "$$TL_DATA_DIR" || { echo "test-assignments runs the chapters and the assignments on the datasets:" \
	    "set TL_DATA_DIR to the folder that holds them (see README: Data)"; exit 1; }
	$(PY) -m pytest -m classroom tests/test_assignments.py

# The site shows the committed outputs and executes nothing; RUN_DIR=<a run directory> puts that run's report.md
# on the results page.
book: $(CLASSROOM_STAMP)
	$(PY) -m tl_core.book build $(if $(RUN_DIR),--run-dir $(RUN_DIR))

chromium:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (the browser test's browser)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || { echo "could not install chromium: run 'apt-get install chromium' as root, then make test-book"; exit 1; }

test-book: book chromium
	$(PY) -m pytest -m browser tests/test_book.py

clean:
	rm -rf build tl_core/*.so *.egg-info $(BUILD_STAMP)
