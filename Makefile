# The two commands of the README: `make demo` (main job) and `make test`. Both set up first.
#
# Set-up makes a virtual environment in $(VENV) that also sees the packages of the Python that creates it
# (--system-site-packages), so an installed torch (a CUDA build, say) is used as it is. torch is installed
# only where none is importable; TORCH_SPEC picks which.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: setup demo test bench

setup:
	@test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"

demo: setup
	$(PY) examples/distance_field.py --out outputs/distance_field.png

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/mesh_queries.py
