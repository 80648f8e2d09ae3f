"""Multiclass cross-entropy from logits, with torch's options and shapes
(chapter 2, ``chapters/02-multiclass-cross-entropy.ipynb``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ce_lib import _checks
from ce_lib._checks import TensorLike
from ce_lib.reference import xlogy_from_log


def cross_entropy(
    logits: TensorLike,
    target: TensorLike,
    weight: TensorLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Cross-entropy between the softmax of ``logits`` and a target, as
    :func:`~torch.nn.functional.cross_entropy`.

    With class indices :math:`y_n`, class weights :math:`w_c` (1 if
    ``weight`` is None), label smoothing :math:`\varepsilon` and
    :math:`p_{n,c} = \operatorname{softmax}(z_n)_c`:

    .. math::
        \mathrm{CE}_n = -(1 - \varepsilon)\, w_{y_n} \log p_{n, y_n}
                        - \frac{\varepsilon}{C} \sum_c w_c \log p_{n, c}

    With class probabilities :math:`y_{n,c}` as target (smoothed to
    :math:`(1 - \varepsilon) y_{n,c} + \varepsilon / C`):
    :math:`\mathrm{CE}_n = -\sum_c w_c\, y_{n,c} \log p_{n,c}`. A term
    whose coefficient is 0 is 0, even where :math:`p_{n,c} = 0` (a logit of
    :math:`-\infty`): :math:`0 \log 0 = 0`. Its formula-shaped version is its
    namesake in :mod:`ce_lib.reference` (class axis last).

    The class axis is axis 1, as in torch: logits of shape ``(N, C)``, or
    ``(N, C, d1, ..., dK)`` for a loss at every position (pixels of a
    segmentation, tokens of a sequence), or ``(C,)`` for one sample.

    Args:
        logits: :math:`z`, shape ``(N, C, d1, ..., dK)`` with K >= 0, or
            ``(C,)``. A logit of :math:`-\infty` masks its class.
        target: class indices, shape ``(N, d1, ..., dK)`` (``()`` for one
            sample), integer dtype, in ``[0, C)`` or equal to
            ``ignore_index``; or class probabilities, the shape of
            ``logits``, floating dtype, entries in [0, 1] (not checked to
            sum to 1).
        weight: class weights :math:`w_c`, shape ``(C,)``, or None. They
            may be negative (as in torch) and may require grad: they are
            differentiated (torch refuses that with class indices).
        ignore_index: an integer. Positions whose target equals it
            contribute exactly 0, whatever their logits, and are left out
            of the mean; their gradient is 0 too (NaN, as in torch, only
            if their logits hold NaN or :math:`+\infty` or are all
            :math:`-\infty`). If it is also a real class, that class's logit
            still sits in every softmax denominator (as in torch, issue
            #63004). Only for class indices: with probability targets any
            value but the default raises :class:`ValueError`.
        reduction: ``'none'``: the loss at every position, shape
            ``(N, d1, ..., dK)`` (0 where ignored); ``'sum'``: their sum;
            ``'mean'`` (default): with class indices the **weighted** mean
            :math:`\sum_n \mathrm{CE}_n / \sum_n w_{y_n}` over positions
            not ignored (both smoothing terms share this denominator); with
            probabilities the sum divided by ``N d1 ... dK``.
        label_smoothing: :math:`\varepsilon \in [0, 1]`.

    Returns:
        The loss, in ``logits``' floating dtype (float16 and bfloat16 are
        computed in float32).

    Gradients flow to ``logits``, to probability targets and to
    ``weight``, to every order; the function works under
    :func:`torch.func.grad`, and under :func:`torch.func.vmap` and
    ``torch.compile(fullgraph=True)`` with validation off.

    Validation (while :class:`ce_lib.validation` is on, the default):
    class indices outside ``[0, C)`` (torch: IndexError, or a device-side
    assert on a GPU), probabilities outside [0, 1], NaN or infinite
    weights, ``'mean'`` of nothing (an empty batch, every target ignored,
    or target weights summing to 0, where torch returns NaN), and a loss
    that came out NaN (NaN or :math:`+\infty` logits, or a row of logits
    all :math:`-\infty`, where torch returns NaN) raise
    :class:`ValueError`. The checks cost a reduction over the targets and
    one over the loss, and up to three host syncs. Shapes, ``weight``'s
    shape, ``ignore_index`` (an integer) and ``label_smoothing`` (in
    [0, 1]) are always checked. With validation off, invalid inputs give
    what torch gives.

    With class weights, label smoothing is **not** cross-entropy against
    the smoothed target with those weights: it follows torch's rule above
    (PyTorch issue #104776). Where torch gives NaN for a zero weight next
    to a :math:`-\infty` logit, this gives the exact finite value.

    Derived in chapter 2 (``chapters/02-multiclass-cross-entropy``).

    Examples:
        >>> import torch
        >>> from ce_lib import cross_entropy
        >>> z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
        >>> loss = cross_entropy(z, torch.tensor([0, 2]), reduction="none")
        >>> [round(v, 4) for v in loss.tolist()]  # -log p_{n, y_n}
        [0.1698, 1.0986]
        >>> masked = torch.tensor([[-torch.inf, 0.0, 1.0]])
        >>> cross_entropy(masked, torch.tensor([-100]), reduction="sum")
        tensor(0.)
        >>> segmentation = torch.zeros(2, 3, 4, 4)  # N, C, height, width
        >>> labels = torch.zeros(2, 4, 4, dtype=torch.long)
        >>> round(cross_entropy(segmentation, labels).item(), 4)  # log 3
        1.0986
    """
    z = _checks.as_float_tensor(logits, "logits")
    target = _checks.as_tensor(target, like=z)
    _checks.check_reduction(reduction)
    _checks.check_scalar_range(label_smoothing, "label_smoothing", 0.0, 1.0)
    _checks.check_integer(ignore_index, "ignore_index")
    one_sample = z.dim() == 1
    if one_sample:
        z, target = z[None], target[None]
    if z.dim() < 2:
        raise ValueError(
            "logits must have shape (N, C, d1, ..., dK) or (C,); got a scalar"
        )
    C = z.shape[1]
    dtype = _checks.compute_dtype(z.dtype)
    if weight is not None:
        weight = _checks.as_float_tensor(weight, "weight", like=z)
        if weight.shape != (C,):
            raise ValueError(
                f"weight must have shape (C,) = ({C},); got "
                f"{tuple(weight.shape)}"
            )
        if _checks.validation_enabled():
            _checks.check_finite(weight, "weight")
        weight = weight.to(dtype)
    eps = float(label_smoothing)
    if target.is_floating_point():
        if ignore_index != -100:
            raise ValueError(
                "ignore_index is only for class-index targets; got "
                f"ignore_index={ignore_index} with probability targets"
            )
        _checks.check_same_shape(z, target, "logits", "target")
        _checks.check_not_empty(target.numel(), reduction, "logits")
        if _checks.validation_enabled():
            _checks.check_range(target, "target", 0.0, 1.0)
        loss = _with_probabilities(z.to(dtype), target.to(dtype), weight, eps)
        kept, denominator = None, None  # 'mean' divides by N d1 ... dK
    else:
        expected = (z.shape[0],) + tuple(z.shape[2:])
        if target.dtype == torch.bool or target.shape != expected:
            names = "(N,)" if z.dim() == 2 else "(N, d1, ..., dK)"
            raise ValueError(
                f"target must be class indices of shape {names} = "
                f"{expected} and an integer dtype, or probabilities of "
                f"shape {tuple(z.shape)}; got {tuple(target.shape)} "
                f"{target.dtype}"
            )
        target = target.long()
        kept = target != ignore_index
        if _checks.validation_enabled():
            _checks.check_target_in_range(
                target, kept, C, ignore_index, "target"
            )
        loss, denominator = _with_indices(
            z.to(dtype), target, kept, weight, eps
        )
        if reduction == "mean" and _checks.validation_enabled():
            _check_something_to_average(denominator, kept, target)
    result = _checks.reduce_loss(loss, reduction, denominator)
    if _checks.validation_enabled():
        _checks.explain_bad_loss(result, _nan_causes(z, kept), _NAN_FALLBACK)
    if one_sample and reduction == "none":
        result = result[0]
    return result.to(z.dtype)


def _with_indices(
    z: Tensor, target: Tensor, kept: Tensor, weight: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """The loss at every position for class indices, and the mean's
    denominator, the sum of w_{y_n} over the positions kept.

    One log_softmax over the class axis; the true class's log-probability
    is gathered (ignored positions gather class 0, and are then set to 0).
    """
    C = z.shape[1]
    safe_target = torch.where(kept, target, 0)
    log_p = torch.log_softmax(z, dim=1)
    log_p_true = log_p.gather(1, safe_target[:, None]).squeeze(1)
    if weight is None:
        w_true = kept.to(z.dtype)  # w_{y_n} = 1, 0 where ignored
    else:
        w_true = torch.where(kept, weight[safe_target], 0.0)
    # -(1 - eps) w_{y_n} log p_{n, y_n}
    loss = -xlogy_from_log((1 - eps) * w_true, log_p_true)
    if eps > 0:  # - (eps / C) sum_c w_c log p_{n,c}
        if weight is None:
            smooth = -log_p.sum(dim=1)
        else:
            w = weight.reshape((C,) + (1,) * (z.dim() - 2))  # on axis 1
            smooth = -xlogy_from_log(w, log_p).sum(dim=1)
        loss = loss + (eps / C) * smooth
    # ignored positions: exactly 0, whatever their logits
    return torch.where(kept, loss, 0.0), w_true.sum()


def _with_probabilities(
    z: Tensor, target: Tensor, weight: Tensor | None, eps: float
) -> Tensor:
    """-sum_c w_c y_{n,c} log p_{n,c} at every position, y smoothed."""
    C = z.shape[1]
    if eps > 0:
        target = (1 - eps) * target + eps / C
    if weight is not None:
        target = target * weight.reshape((C,) + (1,) * (z.dim() - 2))
    return -xlogy_from_log(target, torch.log_softmax(z, dim=1)).sum(dim=1)


def _check_something_to_average(
    denominator: Tensor, kept: Tensor, target: Tensor
) -> None:
    """'mean' divides by sum_n w_{y_n}: refuse 0 rather than return NaN,
    and say why it is 0."""
    if bool(denominator != 0):
        return
    if target.numel() == 0:
        why = "the batch is empty"
    elif not bool(kept.any()):
        why = "every target is ignore_index"
    else:
        why = "the weights of the targets sum to 0"
    raise ValueError(f"reduction='mean' has nothing to average: {why}")


_NAN_FALLBACK = (
    "the loss came out NaN from valid inputs: inf - inf, where weights of "
    "both signs multiply infinite log-probabilities (logits of -inf)"
)


def _nan_causes(z: Tensor, kept: Tensor | None) -> list[_checks.Cause]:
    """Why a cross-entropy can come out NaN: the logits of the positions
    that count (not ignored)."""

    def logits_kept() -> Tensor:  # (N, C, ...) -> (positions kept, C)
        t = z.movedim(1, -1)
        return t if kept is None else t[kept]

    return _checks.softmax_causes(logits_kept, "class")
