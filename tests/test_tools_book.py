"""The book's figure style: size, density, transparency, fonts, determinism."""

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from ce_lib import book  # noqa: E402


@pytest.fixture(autouse=True)
def _style():
    with matplotlib.rc_context():
        book.use_book_style()
        yield
    plt.close("all")


def _figure(width=book.FIGURE_WIDTH_IN, value=1.0):
    fig, axes = plt.subplots(1, 2, figsize=(width, 2.5))
    x = np.linspace(0, 1, 50)
    axes[0].plot(x, value * x**2, label="line")
    axes[0].legend()
    axes[1].imshow(np.outer(x, x), origin="lower")
    return fig


def test_png_is_column_wide_dense_transparent_and_recorded():
    png = book.figure_png(_figure())
    image = Image.open(io.BytesIO(png))
    assert image.size == (1400, 500)
    assert image.size[0] / book.FIGURE_WIDTH_PX >= 2
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0  # a transparent corner
    assert book.figure_record(png) == {
        "width_in": 7.0,
        "dpi": 200,
        "min_font_pt": 9.0,
    }
    assert "Software" not in image.info


def test_png_is_byte_identical_when_redrawn():
    assert book.figure_png(_figure()) == book.figure_png(_figure())


def test_other_widths_are_given_the_column_width():
    png = book.figure_png(_figure(width=10.5))
    assert Image.open(io.BytesIO(png)).size == (1400, 500)


def test_small_text_is_recorded():
    fig = _figure()
    fig.axes[0].set_title("small", fontsize=6)
    assert book.figure_record(book.figure_png(fig))["min_font_pt"] == 6


def test_no_grid_over_images():
    fig = _figure()
    book.figure_png(fig)
    assert fig.axes[0].xaxis.get_gridlines()[0].get_visible()
    assert not fig.axes[1].xaxis.get_gridlines()[0].get_visible()


def test_figsize_checks_its_height():
    assert book.figsize(2.0) == (book.FIGURE_WIDTH_IN, 2.0)
    with pytest.raises(ValueError, match="height"):
        book.figsize(40)
