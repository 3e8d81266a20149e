"""The notebook runs from top to bottom in a fresh kernel, and what it prints holds: the loss fell, and the
held-out render beats the background colour alone, whose PSNR the test recomputes from the written dataset."""

import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
from nbclient import NotebookClient
from PIL import Image

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "assemble_a_head_avatar.ipynb"
CELL_TIMEOUT = 120  # seconds per cell; the whole notebook takes well under a minute on a 2-core CPU
NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def _run(tmp_path: Path) -> nbformat.NotebookNode:
    """The notebook executed in a tmp working directory (it writes its files under it, not into the repo).
    Kernel "python3": jupyter_client falls back to ipykernel in this interpreter where no kernel spec is installed."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_notebook_is_stored_clean_and_valid():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert not any("headfields.models" in cell.source for cell in code)  # assembled by hand, no paper model class


def test_notebook_trains_and_renders_a_held_out_frame(tmp_path):
    nb = _run(tmp_path)
    outputs = _outputs(nb)
    assert not [out for out in outputs if out.output_type == "error"]
    final = [cell for cell in nb.cells if cell.cell_type == "code"][-1]
    assert any("image/png" in out.get("data", {}) for out in final.outputs)  # the held-out render is shown
    text = "".join(out.text for out in outputs if out.output_type == "stream")

    first, last = map(float, re.search(rf"first loss {NUMBER}, last loss {NUMBER}", text).groups())
    assert last < 0.25 * first

    held_out, background = map(float, re.search(rf"held-out PSNR {NUMBER} dB, background alone {NUMBER} dB", text).groups())
    # The background PSNR recomputed from the written ground truth of held-out frame 0 (RGB of an RGBA PNG).
    root = tmp_path / "outputs" / "notebook" / "video"
    first_val = json.loads((root / "transforms_val.json").read_text())["frames"][0]["file_path"]
    truth = np.asarray(Image.open(root / first_val), dtype=np.float64)[..., :3] / 255
    expected = 10 * math.log10(1 / np.mean((1.0 - truth) ** 2))
    assert abs(background - expected) < 0.01
    assert held_out > background + 5.0
