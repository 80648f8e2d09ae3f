"""ce_lib: the cross-entropy losses of the book *Cross-Entropy, Executable*.

Each module mirrors a chapter: :mod:`ce_lib.binary` (chapter 1), :mod:`ce_lib.multiclass`
(chapter 2), :mod:`ce_lib.information` (chapter 3), :mod:`ce_lib.dfl` (chapter 4) and
:mod:`ce_lib.style` (the look of the book's figures).
"""

from ce_lib.style import PALETTE, seed_everything, use_book_style

__all__ = ["PALETTE", "seed_everything", "use_book_style"]
