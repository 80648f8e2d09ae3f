"""pytest plugin: nbval compares the figures too, not only the text.

nbval re-executes every chapter and compares each cell's text outputs with
the stored ones, but skips PNG images. This plugin extends that comparison,
inside the same re-execution (no second run): after nbval's own check of a
cell passes, every stored PNG of the cell is compared with the PNG the
re-executed cell produced.

Two PNGs match when they have the same size and, composited over white,

* at most ``MAX_CHANGED_PIXELS`` pixels differ by more than
  ``PIXEL_THRESHOLD`` (of 255) in some channel, and
* the root-mean-square difference over all pixels and channels is at most
  ``MAX_RMS`` (of 255).

A changed plotted value moves a line, a bar or a marker by whole pixels and
changes hundreds of pixels by far more than the threshold, so it fails;
re-executing an unchanged chapter gives identical pixels with the book's
pinned matplotlib and its own fonts (``ce_lib.book`` fixes size, dpi and
metadata), and the tolerance leaves room only for antialiasing noise.

When a figure differs, the stored, new and difference images are written to
``--figure-diffs`` (default ``_build/figure-diffs``) to look at.

Enabled by the root ``conftest.py``; ``-p no:nbval_figures`` turns it off.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

PIXEL_THRESHOLD = 48  # of 255: a channel difference that is not noise
MAX_CHANGED_PIXELS = 16  # about 2 x 2 CSS pixels at the book's density
MAX_RMS = 2.0  # of 255, over every pixel and channel

_options: dict = {}


def pytest_addoption(parser):
    parser.addoption(
        "--figure-diffs",
        default="_build/figure-diffs",
        help="where nbval_figures writes the images of a figure that "
        "differs (default: _build/figure-diffs)",
    )


def decode(png: str | bytes) -> np.ndarray:
    """A PNG (bytes or base64) as float RGB over white, shape (h, w, 3)."""
    from PIL import Image

    if isinstance(png, str):
        png = base64.b64decode(png)
    with Image.open(io.BytesIO(png)) as image:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:] / 255
    return rgba[..., :3] * alpha + 255 * (1 - alpha)


def compare(stored: str | bytes, new: str | bytes) -> str | None:
    """None if two PNGs show the same figure, else what differs."""
    if stored == new:
        return None
    a, b = decode(stored), decode(new)
    if a.shape != b.shape:
        return (
            f"size {a.shape[1]}x{a.shape[0]} px stored, "
            f"{b.shape[1]}x{b.shape[0]} px now"
        )
    diff = np.abs(a - b)
    changed = int((diff.max(axis=2) > PIXEL_THRESHOLD).sum())
    rms = float(np.sqrt((diff**2).mean()))
    if changed > MAX_CHANGED_PIXELS or rms > MAX_RMS:
        return (
            f"{changed} pixels differ by more than {PIXEL_THRESHOLD}/255 "
            f"(at most {MAX_CHANGED_PIXELS} allowed), RMS difference "
            f"{rms:.2f}/255 (at most {MAX_RMS})"
        )
    return None


def _pngs(outputs) -> list[str]:
    return [
        out["data"]["image/png"]
        for out in outputs
        if "image/png" in out.get("data", {})
    ]


def _save_diff(item, k: int, stored: str, new: str) -> Path | None:
    from PIL import Image

    folder = Path(_options.get("diffs", "_build/figure-diffs"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{Path(str(item.fspath)).stem}-cell{item.cell_num}-fig{k}"
        a, b = decode(stored), decode(new)
        (folder / f"{stem}-stored.png").write_bytes(base64.b64decode(stored))
        (folder / f"{stem}-new.png").write_bytes(base64.b64decode(new))
        if a.shape == b.shape:
            diff = 255 - np.abs(a - b).max(axis=2).clip(0, 255)
            Image.fromarray(diff.astype(np.uint8)).save(
                folder / f"{stem}-diff.png"
            )
    except OSError:
        return None
    return folder / stem


def _compare_outputs(original):
    def compare_outputs(self, test, ref, skip_compare=None):
        if not original(self, test, ref, skip_compare):
            return False
        skip = skip_compare or self.parent.skip_compare
        if "image/png" not in skip:  # nbval compares PNGs itself (--nbdime)
            return True
        stored, new = _pngs(ref), _pngs(test)
        if len(stored) != len(new):
            self.comparison_traceback.append(
                f"{len(stored)} figures stored, {len(new)} produced now"
            )
            return False
        for k, (a, b) in enumerate(zip(stored, new, strict=True), 1):
            problem = compare(a, b)
            if problem:
                where = _save_diff(self, k, a, b)
                self.comparison_traceback.append(
                    f"figure {k} of the cell differs from the stored one: "
                    f"{problem}"
                    + (f"; images in {where}-*.png" if where else "")
                )
                return False
        return True

    compare_outputs.nbval_figures = True
    return compare_outputs


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval missing: nothing to extend
        return
    _options["diffs"] = config.getoption("--figure-diffs")
    if not getattr(IPyNbCell.compare_outputs, "nbval_figures", False):
        IPyNbCell.compare_outputs = _compare_outputs(IPyNbCell.compare_outputs)
