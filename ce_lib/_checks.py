"""Input checks, conversions and the one reduction shared by every loss.

All validation lives here, so that the loss modules read like their
formulas. Every check raises :class:`ValueError` with a message that names
the argument and says what is allowed.

There are two kinds of check. Checks of shapes, dtypes and options look at
metadata only: they cost nothing and always run. Checks of values (ranges,
NaN, class indices, weights) read the data and wait for the answer, which
on a GPU is a host sync: they run only while :class:`validation` is on (the
default), and each costs at most one reduction over an argument, or one
look at the loss after the fact.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")

# Per thread, like torch's grad mode: a thread starts with validation on.
_state = threading.local()


def validation_enabled() -> bool:
    """Whether ce_lib's value checks run in this thread (see
    :class:`validation`)."""
    return getattr(_state, "enabled", True)


class validation:
    """Turn ce_lib's value checks on or off (they are on by default).

    Use it as a context manager, ``with ce_lib.validation(False): ...``,
    and the previous setting returns when the block ends, by an exception
    too; blocks nest. Called on its own, ``ce_lib.validation(False)`` sets
    it for the rest of the thread, like :func:`torch.set_grad_enabled`.

    **On** (the default), every loss checks the values of its inputs and
    raises :class:`ValueError` naming the argument at fault: class indices
    in range, probabilities in [0, 1], finite weights and bins, targets
    inside the bins, and, after the fact, a loss that came out NaN (with
    the reason why). Checks of shapes and options always run: they cost
    nothing.

    **What it costs.** Each check is one reduction over an argument (most
    look at the targets or the loss, not the logits) and each waits for
    its answer: one to four host syncs per call. On a CPU that is a few
    percent of a training step (``benchmarks/README.md``). On a GPU each
    sync stalls the host until the device has caught up, so a training
    loop that queued work ahead loses that lead; a sync cannot happen
    inside a CUDA graph, and ``torch.compile(fullgraph=True)`` and
    :func:`torch.func.vmap` refuse it.

    **When to turn it off.** Once the data pipeline is known to produce
    valid targets: in a tuned GPU training loop, under
    ``torch.compile(..., fullgraph=True)``, CUDA graphs, or
    :func:`torch.func.vmap` (per-sample gradients). With validation off no
    check reads a value and no call syncs the host; valid inputs give
    exactly the same results, and invalid ones give what the arithmetic
    gives (NaN, inf, or a wrong number) instead of an error.

    The setting belongs to the thread that sets it, like torch's grad mode:
    other threads keep their own, and a new thread starts with validation
    on.

    Args:
        enabled: ``True`` to run the checks, ``False`` to skip them.

    Examples:
        >>> import torch, ce_lib
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> ce_lib.cross_entropy(z, torch.tensor([3]))
        Traceback (most recent call last):
        ...
        ValueError: target must be a class index in [0, 3) or \
ignore_index=-100; got 3
        >>> with ce_lib.validation(False):
        ...     loss = ce_lib.cross_entropy(z, torch.tensor([0]))
        ...     print(ce_lib.validation.is_enabled())
        False
        >>> ce_lib.validation.is_enabled()
        True
        >>> round(loss.item(), 4)
        0.1698
    """

    def __init__(self, enabled: bool) -> None:
        if type(enabled) is not bool:
            raise ValueError(f"enabled must be True or False; got {enabled!r}")
        self._previous = validation_enabled()
        _state.enabled = enabled

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self._previous

    @staticmethod
    def is_enabled() -> bool:
        """Whether the checks run in this thread now."""
        return validation_enabled()


def reduce_loss(
    loss: Tensor, reduction: str, denominator: Tensor | float | None = None
) -> Tensor:
    """The one reduction of every loss: ``'none'`` as is, ``'sum'``, or
    ``'mean'``.

    ``'mean'`` divides the sum by ``denominator`` (a weighted count, say),
    or by the number of elements when it is None.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / (loss.numel() if denominator is None else denominator)


#: What every public function accepts: a tensor, a NumPy array, a Python
#: number or a (nested) sequence of numbers.
TensorLike = Tensor | np.ndarray | Sequence[Any] | float | int


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """``torch.as_tensor(x)``, with Python floats as float64, on ``like``'s
    device if given."""
    if isinstance(x, Tensor):
        t = x
    else:
        t = torch.as_tensor(x)
        if t.is_floating_point() and not isinstance(
            x, (np.ndarray, np.generic)
        ):
            t = torch.as_tensor(x, dtype=torch.float64)  # Python floats
    if like is not None and t.device != like.device:
        t = t.to(like.device)
    return t


def as_float_tensor(
    x: Any,
    name: str,
    like: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Like :func:`as_tensor`, then give a non-floating result a floating
    dtype.

    That dtype is ``dtype`` if given, else ``like``'s, else float64 for
    Python and NumPy numbers and the default dtype for tensors. A floating
    ``x`` keeps its dtype (the caller casts to the compute dtype).
    """
    t = as_tensor(x, like)
    if t.is_complex():
        raise ValueError(f"{name} must be real; got dtype {t.dtype}")
    if not t.is_floating_point():
        if dtype is not None:
            t = t.to(dtype)
        elif like is not None:
            t = t.to(like.dtype)
        elif isinstance(x, Tensor):
            t = t.to(torch.get_default_dtype())
        else:
            t = t.to(torch.float64)
    return t


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in: float32 for float16 and bfloat16, else
    ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            "reduction must be one of 'none', 'mean', 'sum'; "
            f"got {reduction!r}"
        )


def check_integer(value: Any, name: str) -> None:
    """A Python or NumPy integer (not a bool, not a float)."""
    is_integer = isinstance(value, numbers.Integral)
    if not is_integer or type(value) is bool:
        raise ValueError(f"{name} must be an integer; got {value!r}")


def check_range(t: Tensor, name: str, lo: float, hi: float) -> None:
    """Every entry of ``t`` lies in ``[lo, hi]`` (so none is NaN): one
    reduction."""
    if t.numel() == 0:
        return
    t_min, t_max = torch.aminmax(t.detach())
    if not bool((t_min >= lo) & (t_max <= hi)):  # False for NaN too
        if bool(torch.isnan(t).any()):
            raise ValueError(
                f"{name} must not contain NaN; it must lie in [{lo:g}, {hi:g}]"
            )
        raise ValueError(
            f"{name} must lie in [{lo:g}, {hi:g}]; got values in "
            f"[{float(t_min):.6g}, {float(t_max):.6g}]"
        )


def check_finite(t: Tensor, name: str) -> None:
    """No entry of ``t`` is NaN or infinite: one reduction."""
    if t.numel() and not bool(torch.isfinite(t.detach()).all()):
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        raise ValueError(f"{name} must be finite (no NaN, no inf); got {kind}")


def check_scalar_range(value: float, name: str, lo: float, hi: float) -> None:
    if not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]; got {value!r}")


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple | None:
    """The shape two shapes broadcast to, or None if they do not.

    Plain Python: ``torch.broadcast_shapes`` imports sympy on its first
    call, which costs about a second.
    """
    result = []
    for m, n in zip(
        (1,) * (len(b) - len(a)) + tuple(a),
        (1,) * (len(a) - len(b)) + tuple(b),
        strict=True,
    ):
        if m != n and 1 not in (m, n):
            return None
        result.append(n if m == 1 else m)
    return tuple(result)


def check_broadcastable(
    t: Tensor, shape: torch.Size, name: str, other: str
) -> None:
    if broadcast_shape(tuple(t.shape), tuple(shape)) == tuple(shape):
        return
    raise ValueError(
        f"{name} must broadcast to the shape of {other}, {tuple(shape)}; "
        f"got {tuple(t.shape)}"
    )


#: A possible cause of a bad loss: the message to raise, and a function
#: giving a boolean tensor that is True where the cause is present.
Cause = tuple[str, Callable[[], Tensor]]


def explain_bad_loss(
    result: Tensor,
    causes: Sequence[Cause],
    fallback: str,
    allow_inf: bool = True,
) -> None:
    """The one explainer of a loss that came out NaN (or inf).

    If ``result`` holds a NaN (or, when ``allow_inf`` is False, an inf),
    raise :class:`ValueError` with the message of the first cause that is
    present, or ``fallback`` if none is. A look at the result after the
    fact: one reduction over it (nothing for a reduced loss) and one host
    sync; the causes are examined only when the result is bad.
    """
    if result.numel() == 0:
        return
    r = result.detach()
    bad = torch.isnan(r) if allow_inf else ~torch.isfinite(r)
    if not bool(bad.any()):
        return
    for message, present in causes:
        if bool(present().any()):
            raise ValueError(message)
    raise ValueError(fallback)


def non_finite_causes(**inputs: Tensor) -> list[Cause]:
    """'name must be finite; got NaN' for each input, then '... got inf'."""
    causes: list[Cause] = []
    for kind, test in (("NaN", torch.isnan), ("inf", torch.isinf)):
        for name, t in inputs.items():
            message = f"{name} must be finite; got {kind}"
            causes.append((message, lambda t=t, test=test: test(t)))
    return causes


def softmax_causes(logits: Callable[[], Tensor], bin: str) -> list[Cause]:
    """Why a loss over a softmax can come out NaN, in the order to report.

    ``logits()`` gives the logits that count, with the class (or bin) axis
    last; ``bin`` names what that axis holds ("class" or "bin").
    """
    return [
        ("logits must not contain NaN", lambda: torch.isnan(logits())),
        (
            (
                "logits must not contain +inf (-inf is allowed: it masks a "
                f"{bin})"
            ),
            lambda: torch.isposinf(logits()),
        ),
        (
            (
                f"logits must not be -inf for every {bin} of a sample: the "
                f"softmax over no {bin} is 0/0"
            ),
            lambda: torch.isneginf(logits()).all(dim=-1),
        ),
    ]


def explain_nan(result: Tensor, **inputs: Tensor) -> None:
    """If ``result`` holds a NaN, raise a ValueError naming the first input
    that holds a NaN, else the first that holds an inf (via
    :func:`explain_bad_loss`)."""
    explain_bad_loss(
        result,
        non_finite_causes(**inputs),
        f"the result came out NaN from finite {', '.join(inputs)}",
    )


def check_not_empty(numel: int, reduction: str, name: str) -> None:
    """``reduction='mean'`` over nothing is 0/0: refuse it rather than
    return NaN."""
    if reduction == "mean" and numel == 0:
        raise ValueError(
            f"reduction='mean' has nothing to average: {name} is empty"
        )


def check_bins(
    bins: int | Tensor | Any | None,
    K: int | None,
    like: Tensor,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Bin positions as a 1-D tensor in ``dtype`` (default: the compute
    dtype of ``like``): ``None`` or an int ``K`` mean 0, 1, ..., K-1.

    ``K`` (if given) is the number of bins the logits have. The positions
    must be finite and strictly increasing (value checks: only while
    validation is on).
    """
    dtype = dtype or compute_dtype(like.dtype)
    if bins is None:
        if K is None:
            raise ValueError(
                "bins must be given (an int K or a 1-D tensor of bin "
                "positions)"
            )
        bins = K
    if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        if bins < 2:
            raise ValueError(f"bins must be at least 2; got {bins}")
        positions = torch.arange(int(bins), dtype=dtype, device=like.device)
    else:
        positions = as_float_tensor(bins, "bins", like=like, dtype=dtype)
        positions = positions.to(dtype)
        if positions.dim() != 1 or positions.numel() < 2:
            raise ValueError(
                "bins must be a 1-D tensor of at least 2 positions; got "
                f"shape {tuple(positions.shape)}"
            )
        if validation_enabled():
            check_finite(positions, "bins")
            if not bool((positions[1:] > positions[:-1]).all()):
                raise ValueError("bins must be strictly increasing")
    if K is not None and positions.numel() != K:
        raise ValueError(
            f"bins must have K = {K} positions, one per logit; got "
            f"{positions.numel()}"
        )
    return positions


# --- checks for chapters 5-6 ---


def check_finite_at_least(value: float, name: str, lo: float) -> None:
    """A finite real number (not a bool) that is at least ``lo``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not np.isfinite(float(value)) or value < lo:
        raise ValueError(
            f"{name} must be a finite number >= {lo:g}; got {value!r}"
        )


def check_no_grad(t: Tensor, name: str) -> None:
    """``t`` is data, not something to differentiate: no requires_grad."""
    if t.requires_grad:
        raise ValueError(
            f"{name} must not require grad (it is data: pass {name}.detach())"
        )


def check_rows_sum_to_one(p: Tensor, name: str) -> None:
    """Each row (last axis) of ``p`` sums to 1, to a tolerance that grows
    with the row's length and the dtype's epsilon."""
    if p.numel() == 0:
        return
    sums = p.detach().sum(dim=-1, dtype=torch.float64)
    tol = max(1e-3, p.shape[-1] * torch.finfo(p.dtype).eps)
    low, high = torch.aminmax(sums)
    if not bool((low >= 1 - tol) & (high <= 1 + tol)):  # False for NaN
        raise ValueError(
            f"each row of {name} must sum to 1 (probabilities over the "
            f"classes); got row sums in [{float(low):.6g}, "
            f"{float(high):.6g}]"
        )


def check_class_indices(t: Tensor, C: int, name: str) -> Tensor:
    """Class indices in ``[0, C)``: integers, booleans or whole floats.

    Returns them as int64.
    """
    if t.is_complex():
        raise ValueError(f"{name} must hold class indices; got {t.dtype}")
    if t.numel() == 0:
        return t.long()
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise ValueError(  # NaN lands here too
            f"{name} must hold class indices, whole numbers in [0, {C}); "
            "got values that are not whole numbers"
        )
    if not bool(((t >= 0) & (t < C)).all()):
        bad = t[(t < 0) | (t >= C)][0].item()
        raise ValueError(
            f"{name} must be a class index in [0, {C}); got {bad:g}"
        )
    return t.long()


def check_rows_kept(kept: Tensor, reduction: str) -> None:
    """``reduction='mean'`` over no kept row is 0/0: refuse it, saying
    whether the batch is empty or every target is ``ignore_index``
    (chapter 6's losses; one host sync)."""
    if reduction == "mean" and not bool(kept.any()):
        empty = kept.numel() == 0
        why = "the batch is empty" if empty else "every target is ignore_index"
        raise ValueError(f"reduction='mean' has nothing to average: {why}")


def check_target_in_range(
    target: Tensor, kept: Tensor, C: int, ignore_index: int, name: str
) -> None:
    """Every target that is not ``ignore_index`` is a class index in
    ``[0, C)``: one reduction and one host sync (chapter 6)."""
    bad = kept & ((target < 0) | (target >= C))
    if target.numel() and bool(bad.any()):
        raise ValueError(
            f"{name} must be a class index in [0, {C}) or "
            f"ignore_index={ignore_index}; got {target[bad][0].item()}"
        )
