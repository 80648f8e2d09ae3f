"""One look for every figure in the book, and one seed for every random source.

Every chapter calls :func:`use_book_style` once, near the top, and never sets
dpi, facecolours, transparency or font sizes itself. From then on every figure
a cell shows is:

* **the text column's width**: :data:`FIGURE_WIDTH_IN` inches, shown at
  :data:`FIGURE_WIDTH_PX` CSS pixels, the width of a cell output in the text
  column at a 1280 px window. The height is the chapter's to choose
  (``figsize=figsize(3.0)``); a ``figsize`` of another width is given the
  column's width when the figure is shown, its height kept;
* **sharp**: a PNG of :data:`FIGURE_DPI` dpi, 2.08 image pixels per CSS pixel;
* **readable**: no text under :data:`MIN_FONT_PT` points at that size (the
  style sets 9 pt ticks and legends, 10 pt labels). Each PNG records its
  smallest font size (:func:`figure_record`); ``tools/check_site.py`` reads it;
* **theme-safe**: a transparent background, dark ink and the palette below;
  ``_static/figures.css`` shows figures inverted (``invert(1)
  hue-rotate(180deg)``) under the dark theme, so the ink turns light and each
  colour keeps its hue;
* **reproducible**: a fixed size (no ``bbox_inches="tight"``, whose crop moves
  with the text extents), constrained layout and no metadata that changes
  between runs, so re-executing an unchanged chapter gives the same pixels
  (``make test`` compares them).
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib

import matplotlib
import numpy as np
import torch

#: Okabe-Ito colours under the names the chapters use (colour-blind safe;
#: under the dark theme's inversion they keep their hue, lighter).
PALETTE: dict[str, str] = {
    "class1": "#0072B2",  # blue: class 1, the p1 term
    "class0": "#D55E00",  # vermillion: class 0, the p0 term
    "total": "#000000",  # black: a sum or a unified formula
    "green": "#009E73",
    "purple": "#CC79A7",
    "yellow": "#E69F00",
    "sky": "#56B4E9",
    "grey": "#7F7F7F",
}

#: CSS pixels a figure is shown at: the width of a cell output in the text
#: column of sphinx-book-theme 1.3 at a 1280 px window (``check_site.py``
#: measures it).
FIGURE_WIDTH_PX: int = 672
#: The figure's width in inches: 96 CSS pixels to the inch, so a 9 pt label in
#: the figure is shown as 9 pt text on the page.
FIGURE_WIDTH_IN: float = FIGURE_WIDTH_PX / 96
#: Resolution of the stored PNG: 7 in x 200 dpi = 1400 px shown at 672 CSS px.
FIGURE_DPI: int = 200
#: The smallest font size, in points, of a figure shown at FIGURE_WIDTH_PX.
MIN_FONT_PT: float = 9.0
#: Key of the PNG text chunk that records a figure's size and smallest font.
RECORD_KEY: str = "ce-book"

_INK = "#1A1A1A"  # text and axes: near black, near white when inverted

_RC = {
    "figure.figsize": (FIGURE_WIDTH_IN, 3.0),
    "figure.dpi": 96,  # the size in a figure's text repr is in CSS px
    "savefig.dpi": FIGURE_DPI,
    "savefig.bbox": "standard",  # never 'tight': a fixed size, no crop jitter
    "figure.facecolor": "none",
    "axes.facecolor": "none",
    "savefig.facecolor": "none",
    "savefig.edgecolor": "none",
    "savefig.transparent": True,
    "font.size": 10,
    "axes.edgecolor": "#444444",
    "axes.labelcolor": _INK,
    "text.color": _INK,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "xtick.labelcolor": _INK,
    "ytick.labelcolor": _INK,
    "axes.grid": True,
    "grid.color": "#D0D0D0",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 11,
    "figure.labelsize": 10,
    "legend.facecolor": "white",
    "legend.edgecolor": "#CCCCCC",
    "legend.framealpha": 0.9,
    "lines.linewidth": 2.0,
    "lines.markersize": 5,
    "patch.edgecolor": _INK,
    "hist.bins": 30,
    "image.cmap": "viridis",
    "figure.constrained_layout.use": True,
    "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE.values())),
    "svg.hashsalt": "cross-entropy-executable",
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
}


def figsize(height: float = 3.0) -> tuple[float, float]:
    """``figsize`` for a figure as wide as the column, ``height`` inches high.

    >>> figsize(2.5)
    (7.0, 2.5)
    """
    if not 0.5 <= height <= 12:
        raise ValueError(f"height must be in [0.5, 12] inches, got {height}")
    return (FIGURE_WIDTH_IN, float(height))


def smallest_font_pt(fig) -> float | None:
    """The smallest font size, in points, of the visible text in ``fig``."""
    from matplotlib.text import Text

    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and _drawn(t)
    ]
    return min(sizes) if sizes else None


def _drawn(text) -> bool:
    """Whether a text lies in its figure (ticks outside the view do not)."""
    try:
        box = text.get_window_extent()
    except (RuntimeError, ValueError):  # no renderer yet: count it
        return True
    fig_box = text.get_figure(root=True).bbox
    return (
        box.x1 > fig_box.x0
        and box.x0 < fig_box.x1
        and box.y1 > fig_box.y0
        and box.y0 < fig_box.y1
    )


def figure_png(fig) -> bytes:
    """The figure as the book stores it: a PNG, column-wide, transparent.

    The PNG carries one text chunk, ``ce-book``, with the figure's width in
    inches, its dpi and its smallest font size (``tools/check_site.py`` reads
    it), and nothing that could vary between runs (no software version, no
    date). The figure is laid out without rendering, then drawn once (the
    pixels cost most); the record is read from that drawing and written
    into the PNG afterwards.
    """
    from matplotlib.collections import QuadMesh
    from matplotlib.contour import ContourSet

    width, height = fig.get_size_inches()
    if abs(width - FIGURE_WIDTH_IN) > 1e-9:
        fig.set_size_inches(FIGURE_WIDTH_IN, height)
    for ax in fig.axes:  # no grid lines across an image or filled contours
        if ax.images or any(
            isinstance(c, (QuadMesh, ContourSet)) for c in ax.collections
        ):
            ax.grid(False)
    fig.draw_without_rendering()  # lay out once, as savefig's draw will see
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=FIGURE_DPI,
        transparent=True,
        bbox_inches=None,
        metadata={"Software": None},
    )
    record = {  # the layout of the drawing just made: its visible text
        "width_in": round(FIGURE_WIDTH_IN, 4),
        "dpi": FIGURE_DPI,
        "min_font_pt": smallest_font_pt(fig),
    }
    return _with_text_chunk(buffer.getvalue(), RECORD_KEY, json.dumps(record))


def _with_text_chunk(png: bytes, key: str, text: str) -> bytes:
    """``png`` with a ``tEXt`` chunk ``key: text`` after its header chunk."""
    data = key.encode("latin-1") + b"\0" + text.encode("latin-1")
    chunk = (
        struct.pack(">I", len(data))
        + b"tEXt"
        + data
        + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    )
    end_of_header = (
        8 + 4 + 4 + 13 + 4
    )  # signature, IHDR length, type, data, CRC
    return png[:end_of_header] + chunk + png[end_of_header:]


def figure_record(png: bytes) -> dict | None:
    """The ``ce-book`` record of a PNG from :func:`figure_png`, or None."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        raw = image.text.get(RECORD_KEY) if hasattr(image, "text") else None
    return json.loads(raw) if raw else None


def _png_formatter(fig):
    """IPython's ``image/png`` formatter for figures: PNG and display size."""
    if not fig.axes and not fig.lines:  # empty: show nothing, as IPython does
        return None
    png = figure_png(fig)
    height_px = round(fig.get_size_inches()[1] * 96)
    data = base64.b64encode(png).decode("ascii")
    return data, {"width": FIGURE_WIDTH_PX, "height": height_px}


def use_book_style() -> None:
    """Apply the book's figure style, and show figures as the book stores them.

    In IPython (a notebook, nbval's kernel) it replaces the inline backend's
    PNG formatter by one that writes :func:`figure_png`; in plain Python it
    only sets matplotlib's rcParams.
    """
    matplotlib.rcParams.update(_RC)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing more to configure
        return
    shell = get_ipython()
    if shell is None:
        return
    # resolve the backend now: loading the inline backend sets its own
    # formatters, which must come before ours, not replace them later
    import matplotlib.pyplot as plt

    plt.switch_backend(matplotlib.get_backend())
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    for mime in ("image/svg+xml", "image/jpeg", "application/pdf"):
        formatters[mime].pop(Figure, None)
    formatters["image/png"].for_type(Figure, _png_formatter)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a seeded CPU ``torch.Generator``.

    Draw random data from the returned generator on the CPU and then move it
    to the device: CUDA's generator gives other numbers for the same seed, and
    the book's printed outputs must be the same on both.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
