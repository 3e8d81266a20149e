# The two commands of the README: `make demo` (main job) and `make test`. Both set up first.
#
# Set-up installs into the active virtual or conda environment if $(PYTHON) runs in one. Otherwise it makes
# one in $(VENV) that also sees the packages of $(PYTHON) (--system-site-packages). Either way an installed
# torch (a CUDA build, say) is used as it is; torch is installed only where none is importable, and
# TORCH_SPEC picks which.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# pytest's worker processes (pytest-xdist): the CPU's cores, at most 4 (each worker holds its own Warp modules and
# fixtures, about 1-3 GB on the heaviest tests). TEST_WORKERS=0 runs the tests in this process.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, os.cpu_count() or 1))")
# The installed torch, pinned while the extras install: lpips needs torchvision, whose newest release would
# otherwise replace torch (and pull CUDA packages) instead of matching it.
TORCH_PIN := build/torch-pin.txt
IN_ENV := $(shell $(PYTHON) -c "import os, sys; print(int(sys.prefix != sys.base_prefix or os.path.isdir(os.path.join(sys.prefix, 'conda-meta'))))")
ifeq ($(IN_ENV),1)
PY := $(shell $(PYTHON) -c "import sys; print(sys.executable)")
else
PY := $(VENV)/bin/python
endif

# Build with the environment's own setuptools when it is recent enough: then set-up needs no network once
# everything is installed (pip's isolated build would fetch setuptools every time).
NO_ISOLATION = $(shell $(PY) -c "import setuptools; print('--no-build-isolation' if int(setuptools.__version__.split('.')[0]) >= 70 else '')" 2>/dev/null)

.PHONY: setup demo test bench

setup:
ifneq ($(IN_ENV),1)
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV) \
		|| (rm -rf $(VENV); echo "could not create $(VENV): on Debian/Ubuntu, apt-get install python3-venv"; exit 1)
endif
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	@mkdir -p build && $(PY) -c "import torch; print('torch==' + torch.__version__)" > $(TORCH_PIN)
	$(PY) -m pip install --quiet $(NO_ISOLATION) -e ".[dev]" -c $(TORCH_PIN)
	@# The tracker's MediaPipe models, out of the mediapipe==0.10.21 wheel from PyPI (once; never at run time).
	$(PY) -m headfields.apps.tracking.model_files

demo: setup
	$(PY) -m headfields train insta --out outputs/insta --max-minutes 15

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site  # no --quiet: it hides the warnings strict counts
	# worksteal: a worker that runs dry takes tests queued for the other, so a minute-long test queued last does not
	# run alone at the end. --durations: the 25 slowest tests, so they stay visible.
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25

bench: setup
	$(PY) -m pip install --quiet $(NO_ISOLATION) -e ".[bench]" -c $(TORCH_PIN)
	$(PY) benchmarks/mesh_queries.py
