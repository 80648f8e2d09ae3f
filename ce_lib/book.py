"""One look for every figure in the book, and one seed for every random source.

Every chapter calls :func:`use_book_style` once, so that chapters stay free of styling code:
figures get an opaque white background (readable on the theme's dark mode too), a
colour-blind-safe palette (Okabe and Ito), fixed size and resolution, and no metadata that
changes from run to run.
"""

from __future__ import annotations

import random

import matplotlib
import numpy as np
import torch

#: Okabe-Ito colours under the names the chapters use.
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

_RC = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "axes.edgecolor": "#333333",
    "axes.labelcolor": "#111111",
    "text.color": "#111111",
    "xtick.color": "#333333",
    "ytick.color": "#333333",
    "axes.grid": True,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.framealpha": 1.0,
    "lines.linewidth": 2.0,
    "figure.constrained_layout.use": True,
    "axes.prop_cycle": matplotlib.cycler(color=list(PALETTE.values())),
    "svg.hashsalt": "cross-entropy-executable",
}


def use_book_style() -> None:
    """Apply the book's figure style to matplotlib (inline backend, PNG output)."""
    matplotlib.rcParams.update(_RC)
    try:  # in a notebook: PNG figures at a fixed size, no tight-bbox jitter
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # plain Python: nothing to configure
        pass


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU ``torch.Generator`` with that seed.

    Draw random data from the returned generator on the CPU and then move it to the device:
    CUDA's generator gives other numbers for the same seed, and the book's printed outputs
    must be the same on both.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
