"""ce_lib: the cross-entropy losses of *Cross-Entropy, Executable*.

Each module mirrors a chapter: :mod:`ce_lib.binary` (chapter 1),
:mod:`ce_lib.multiclass` (chapter 2), :mod:`ce_lib.information`
(chapter 3), :mod:`ce_lib.dfl` (chapter 4), :mod:`ce_lib.focal` and
:mod:`ce_lib.calibration` (chapter 5), :mod:`ce_lib.linear` and
:mod:`ce_lib.parallel` (chapter 6). :mod:`ce_lib.reference` holds the
formula-shaped versions the chapters show. The book's figure style and
seeding live in :mod:`ce_lib.book`, which needs matplotlib (the ``book``
extra) and is not imported here.
"""

from ce_lib._checks import validation
from ce_lib.binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)
from ce_lib.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from ce_lib.dfl import distribution_focal_loss, integral, two_hot
from ce_lib.focal import sigmoid_focal_loss
from ce_lib.information import entropy, kl_divergence
from ce_lib.linear import linear_cross_entropy
from ce_lib.multiclass import cross_entropy
from ce_lib.parallel import vocab_parallel_cross_entropy

__all__ = [
    "validation",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "kl_divergence",
    "two_hot",
    "distribution_focal_loss",
    "integral",
    "sigmoid_focal_loss",
    "expected_calibration_error",
    "reliability_bins",
    "fit_temperature",
    "linear_cross_entropy",
    "vocab_parallel_cross_entropy",
]
