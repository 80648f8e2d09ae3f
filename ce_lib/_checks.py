"""Input checks shared by every loss of :mod:`ce_lib`.

All validation lives here, so that the loss modules read like their formulas. Every check is
cheap (at most one reduction over an argument) and raises :class:`ValueError` with a message
that names the argument and says what is allowed.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")

_validation_enabled = True


class validation:
    """Turn ce_lib's input checks on or off inside a ``with`` block (on by default).

    ``with ce_lib.validation(False): ...`` runs no check and never syncs the host with the
    device, so a loss can be captured by ``torch.compile(fullgraph=True)``, CUDA graphs and
    ``torch.func.vmap``. On exit the previous setting returns. (Skeleton: the library issue
    fills in what each loss skips.)
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self._previous: bool | None = None

    def __enter__(self) -> None:
        global _validation_enabled
        self._previous, _validation_enabled = _validation_enabled, self.enabled

    def __exit__(self, *exc: object) -> None:
        global _validation_enabled
        _validation_enabled = self._previous


def validation_enabled() -> bool:
    """Whether ce_lib's input checks run (see :class:`validation`)."""
    return _validation_enabled


def reduce_loss(loss: Tensor, reduction: str, denominator: Tensor | float | None = None) -> Tensor:
    """The one reduction of every loss: ``'none'`` as is, ``'sum'``, or ``'mean'``.

    ``'mean'`` divides the sum by ``denominator`` (a weighted count, say), or by the number of
    elements when it is None.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / (loss.numel() if denominator is None else denominator)

#: What every public function accepts: a tensor, a NumPy array, a Python number or sequence.
TensorLike = Union[Tensor, np.ndarray, Sequence[Any], float, int]


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """``torch.as_tensor(x)``, with Python floats as float64, on ``like``'s device if given."""
    if isinstance(x, Tensor):
        t = x
    else:
        t = torch.as_tensor(x)
        if t.is_floating_point() and not isinstance(x, (np.ndarray, np.generic)):
            t = torch.as_tensor(x, dtype=torch.float64)  # Python floats are doubles
    if like is not None and t.device != like.device:
        t = t.to(like.device)
    return t


def as_float_tensor(x: Any, name: str, like: Tensor | None = None) -> Tensor:
    """Like :func:`as_tensor`, then give a non-floating result a floating dtype.

    That dtype is ``like``'s if given, else float64 for Python and NumPy numbers and the default
    dtype for tensors. A floating ``x`` keeps its dtype (the caller casts to the compute dtype).
    """
    t = as_tensor(x, like)
    if t.is_complex():
        raise ValueError(f"{name} must be real; got dtype {t.dtype}")
    if not t.is_floating_point():
        if like is not None:
            t = t.to(like.dtype)
        else:
            t = t.to(torch.get_default_dtype() if isinstance(x, Tensor) else torch.float64)
    return t


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in: float32 for float16 and bfloat16, else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of 'none', 'mean', 'sum'; got {reduction!r}")


def check_range(t: Tensor, name: str, lo: float, hi: float) -> None:
    """Every entry of ``t`` lies in ``[lo, hi]`` (so none is NaN): one reduction."""
    if t.numel() == 0:
        return
    t_min, t_max = torch.aminmax(t.detach())
    if not bool((t_min >= lo) & (t_max <= hi)):  # False for NaN too
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name} must not contain NaN; it must lie in [{lo:g}, {hi:g}]")
        raise ValueError(
            f"{name} must lie in [{lo:g}, {hi:g}]; got values in [{float(t_min):.6g}, {float(t_max):.6g}]"
        )


def check_scalar_range(value: float, name: str, lo: float, hi: float) -> None:
    if not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]; got {value!r}")


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_broadcastable(t: Tensor, shape: torch.Size, name: str, other: str) -> None:
    try:
        if torch.broadcast_shapes(t.shape, shape) == shape:
            return
    except RuntimeError:
        pass
    raise ValueError(f"{name} must broadcast to the shape of {other}, {tuple(shape)}; got {tuple(t.shape)}")


def check_no_nan(result: Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` if ``result`` holds a NaN (a cheap check on a loss, after the fact)."""
    if result.numel() and bool(torch.isnan(result.detach()).any()):
        raise ValueError(message)


def explain_nan(result: Tensor, **inputs: Tensor) -> None:
    """If ``result`` holds a NaN, raise a ValueError naming the first input that is not finite.

    A cheap check after the fact: the inputs are only looked at when something went wrong.
    """
    if result.numel() and bool(torch.isnan(result.detach()).any()):
        for name, t in inputs.items():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} must be finite (no NaN or inf)")
        raise ValueError(f"the loss came out NaN for inputs {', '.join(inputs)}")


def check_not_empty(numel: int, reduction: str, name: str) -> None:
    """``reduction='mean'`` over nothing is 0/0: refuse it rather than return NaN."""
    if reduction == "mean" and numel == 0:
        raise ValueError(f"reduction='mean' has nothing to average: {name} is empty")


def check_bins(bins: int | Tensor | Any | None, K: int | None, like: Tensor) -> Tensor:
    """Bin positions as a 1-D tensor: ``None`` or an int ``K`` mean 0, 1, ..., K-1.

    ``K`` (if given) is the number of bins the logits have. Positions must be strictly increasing.
    """
    if bins is None:
        if K is None:
            raise ValueError("bins must be given (an int K or a 1-D tensor of bin positions)")
        bins = K
    if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        if bins < 2:
            raise ValueError(f"bins must be at least 2; got {bins}")
        positions = torch.arange(int(bins), dtype=like.dtype, device=like.device)
    else:
        positions = as_float_tensor(bins, "bins", like=like)
        if positions.dim() != 1 or positions.numel() < 2:
            raise ValueError(f"bins must be a 1-D tensor of at least 2 positions; got shape {tuple(positions.shape)}")
        if not bool((positions[1:] > positions[:-1]).all()):
            raise ValueError("bins must be strictly increasing (and not NaN)")
    if K is not None and positions.numel() != K:
        raise ValueError(f"bins must have K = {K} positions, one per logit; got {positions.numel()}")
    return positions
