# The two commands of the README: `make demo` (main job) and `make test`. Both set up first.
PYTHON ?= python3
# Installed only where torch is missing, so a GPU user's own torch build is kept.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test bench

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install --quiet -e ".[dev]"

demo: setup
	$(PYTHON) examples/distance_field.py --out outputs/distance_field.png

test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) -m pip install --quiet -e ".[bench]"
	$(PYTHON) benchmarks/mesh_queries.py
