"""ce_lib: the cross-entropy losses of the book *Cross-Entropy, Executable*.

Each module mirrors a chapter: :mod:`ce_lib.binary` (chapter 1), :mod:`ce_lib.multiclass`
(chapter 2), :mod:`ce_lib.information` (chapter 3), :mod:`ce_lib.dfl` (chapter 4) and
:mod:`ce_lib.style` (the look of the book's figures).
"""

from ce_lib.binary import binary_cross_entropy, binary_cross_entropy_with_logits
from ce_lib.dfl import distribution_focal_loss, integral, two_hot
from ce_lib.information import entropy, kl_divergence
from ce_lib.multiclass import cross_entropy
from ce_lib.style import PALETTE, seed_everything, use_book_style

__all__ = [
    "PALETTE",
    "seed_everything",
    "use_book_style",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "two_hot",
    "distribution_focal_loss",
    "integral",
]
