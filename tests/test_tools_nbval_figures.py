"""The figure comparison that nbval_figures adds to nbval: a changed plotted
value fails, an unchanged re-execution passes."""

import io
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from ce_lib import book

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import nbval_figures  # noqa: E402


def _png(heights) -> bytes:
    with matplotlib.rc_context():
        book.use_book_style()
        fig, ax = plt.subplots(figsize=book.figsize(2.5))
        ax.bar(["a", "b", "c"], heights)
        ax.plot([0, 1, 2], heights, color=book.PALETTE["total"])
        png = book.figure_png(fig)
        plt.close(fig)
    return png


def test_the_same_figure_matches():
    assert nbval_figures.compare(_png([1, 2, 3]), _png([1, 2, 3])) is None


def test_antialiasing_noise_matches():
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(_png([1, 2, 3])))).copy()
    image[100:104, 100:104, :3] ^= 8  # a few channel values off by 8
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png")
    assert nbval_figures.compare(_png([1, 2, 3]), buffer.getvalue()) is None


def test_a_changed_value_fails():
    problem = nbval_figures.compare(_png([1, 2, 3]), _png([1, 2, 3.1]))
    assert problem is not None and "pixels differ" in problem


def test_another_size_fails():
    with matplotlib.rc_context():
        book.use_book_style()
        fig = plt.figure(figsize=book.figsize(2.0))
        fig.add_subplot().plot([0, 1], [0, 1])
        taller = book.figure_png(fig)
        plt.close(fig)
    assert "size" in nbval_figures.compare(_png([1, 2, 3]), taller)


PLOT = "plt.plot([0, 1, 2], [0.0, 1.0, {}])\nplt.show()"


def test_nbval_fails_on_a_changed_figure(tmp_path):
    """nbval with the plugin, on a notebook whose stored outputs come from
    plotted values 2.0 and 2.0, after the second was changed to 2.2: the
    cell whose value changed fails, the unchanged one passes."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt"),
        nbformat.v4.new_code_cell(PLOT.format("2.0")),
        nbformat.v4.new_code_cell(PLOT.format("2.0")),
    ]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert "image/png" in nb.cells[2].outputs[0]["data"]
    nb.cells[2].source = PLOT.format("2.2")
    nbformat.write(nb, tmp_path / "figures.ipynb")

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "nbval_figures",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
            "--nbval",
            "--nbval-current-env",
            "--figure-diffs",
            str(tmp_path / "diffs"),
            "-q",
            "figures.ipynb",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tools")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    assert "FAILED figures.ipynb::Cell 2" in out, out
    assert "figure 1 of the cell differs from the stored one" in out
    assert (tmp_path / "diffs" / "figures-cell2-fig1-stored.png").exists()
