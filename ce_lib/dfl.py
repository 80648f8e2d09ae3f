"""Distribution Focal Loss, its two-hot target and the Integral (chapter 4,
``chapters/04-distribution-focal-loss.ipynb``)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

from ce_lib import _checks, reference
from ce_lib._checks import TensorLike, reduce_loss


def _is_unit(bins: int | Any | None) -> bool:
    """Bins given as None or K: at 0, 1, ..., K-1."""
    return bins is None or isinstance(bins, numbers.Integral)


def _at(bins: Tensor, i: Tensor) -> Tensor:
    """``bins[i]`` for an index tensor of any shape, 0-d included, also
    under vmap."""
    return bins.gather(0, i.reshape(-1)).reshape(i.shape)


def _neighbours(
    y: Tensor, bins: Tensor, unit: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Left index i with y_i <= y <= y_{i+1}, and the distances
    y_{i+1} - y and y - y_i.

    ``unit`` says the bins are 0, 1, ..., K-1, where y_i is floor(y).
    """
    if not unit:
        i = reference.left_neighbour(y, bins)
        return i, _at(bins, i + 1) - y, y - _at(bins, i)
    y_i = y.detach().floor().clamp(0, len(bins) - 2)  # the last pair: K-1
    from_left = y - y_i
    return y_i.long(), 1 - from_left, from_left


def _targets(
    y: TensorLike, like: Tensor, bins: int | TensorLike | None, K: int | None
) -> tuple[Tensor, Tensor]:
    """``y`` and the bin positions, both in the compute dtype of ``like``
    (float32 for half-precision logits: positions above 256 are exact),
    checked: bins finite and increasing, every y inside them."""
    dtype = _checks.compute_dtype(like.dtype)
    positions = _checks.check_bins(bins, K, like=like, dtype=dtype)
    y = _checks.as_float_tensor(y, "y", like=like, dtype=dtype).to(dtype)
    if _checks.validation_enabled():
        lo, hi = positions[0].item(), positions[-1].item()
        _checks.check_range(y, "y", lo, hi)
    return y, positions


def two_hot(y: TensorLike, bins: int | TensorLike) -> Tensor:
    r"""The two-neighbour ("two-hot") soft target of a continuous ``y``.

    For :math:`y_i \le y \le y_{i+1}`, bin :math:`i` gets mass
    :math:`(y_{i+1} - y) / (y_{i+1} - y_i)`, bin :math:`i + 1` gets
    :math:`(y - y_i) / (y_{i+1} - y_i)`, every other bin 0; so the masses
    sum to 1 and their expectation :math:`\sum_k t_k y_k` is ``y`` itself.
    Computed by its namesake in :mod:`ce_lib.reference`. The bin axis is
    the last.

    Args:
        y: targets, any shape, each in :math:`[y_0, y_{K-1}]` (the last bin
            included).
        bins: ``K``, for bins at 0, 1, ..., K-1, or a 1-D strictly
            increasing tensor of the ``K`` bin positions.

    Returns:
        Shape ``y.shape + (K,)``, in ``y``'s floating dtype (float16 and
        bfloat16 are computed in float32). Differentiable in ``y`` and the
        bins.

    Validation (while :class:`ce_lib.validation` is on, the default):
    ``y`` outside the bins or NaN, and bins that are not finite or not
    strictly increasing, raise :class:`ValueError` (two host syncs).

    Derived in chapter 4 (``chapters/04-distribution-focal-loss``).

    Examples:
        >>> from ce_lib import two_hot
        >>> two_hot([3.3, 4.0], 5)
        tensor([[0.0000, 0.0000, 0.0000, 0.7000, 0.3000],
                [0.0000, 0.0000, 0.0000, 0.0000, 1.0000]], dtype=torch.float64)
    """
    y_in = _checks.as_float_tensor(y, "y")
    y, positions = _targets(y_in, y_in, bins, None)
    return reference.two_hot(y, positions).to(y_in.dtype)


class _DistributionFocalLoss(torch.autograd.Function):
    r"""The DFL of every row, reduced, with its gradient written out.

    Forward: one ``log_softmax`` and the two neighbours' log-probabilities
    gathered at once (``pair`` holds the bins :math:`(i, i + 1)` of every
    row, ``distances`` their weights :math:`(y_{i+1} - y, y - y_i)`); it
    also returns :math:`\log S`, not differentiable, for the backward.
    Backward: :math:`\partial\,\mathrm{DFL}/\partial z_k = (y_{i+1} -
    y_i) S_k - (y_{i+1} - y)[k = i] - (y - y_i)[k = i + 1]`, in place from
    the saved :math:`\log S` for a first-order backward (grad mode off,
    the usual ``loss.backward()``); under ``create_graph=True`` or
    :mod:`torch.func` from ``log_softmax(z)`` again, out of place, so that
    autograd can differentiate it (second derivatives).
    """

    generate_vmap_rule = True  # forward and backward are plain torch code

    @staticmethod
    def forward(
        z: Tensor, pair: Tensor, distances: Tensor, reduction: str
    ) -> tuple[Tensor, Tensor]:
        log_S = torch.log_softmax(z, dim=-1)
        log_S_pair = log_S.gather(-1, pair)  # log S_i, log S_{i+1}
        # (y_{i+1} - y) log S_i + (y - y_i) log S_{i+1}, with 0 log 0 = 0
        terms = torch.where(distances == 0, 0.0, distances * log_S_pair)
        if reduction == "none":
            return -terms.sum(dim=-1), log_S
        rows = pair.shape[:-1].numel()  # the mean is over the rows
        return -reduce_loss(terms, reduction, rows), log_S

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, outputs: tuple) -> None:
        z, pair, distances, ctx.reduction = inputs
        log_S = outputs[1]
        ctx.mark_non_differentiable(log_S)
        ctx.set_materialize_grads(False)  # no zeros for log S's gradient
        ctx.save_for_backward(z, pair, distances, log_S)
        ctx.save_for_forward(z, pair, distances, log_S)

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor, _: Tensor | None
    ) -> tuple[Tensor | None, None, Tensor | None, None]:
        if grad is None:  # the loss was not used
            return None, None, None, None
        z, pair, distances, log_S = ctx.saved_tensors
        if ctx.reduction == "none":
            g = grad[..., None]  # one factor per row
        else:  # one factor for all
            g = (
                grad / pair.shape[:-1].numel()
                if ctx.reduction == "mean"
                else grad
            )
        first_order = not torch.is_grad_enabled()
        if not first_order:  # differentiable: log S from the logits again
            log_S = torch.log_softmax(z, dim=-1)
        grad_z = grad_distances = None
        if ctx.needs_input_grad[0]:
            width = distances.sum(dim=-1, keepdim=True)  # y_{i+1} - y_i
            if first_order:  # in place: one tensor of the logits' size
                grad_z = torch.exp(log_S).mul_(width * g)
                grad_z.scatter_add_(-1, pair, distances * -g)
            else:
                on_pair = torch.zeros_like(z).scatter_add(-1, pair, distances)
                grad_z = (torch.exp(log_S) * width - on_pair) * g
        if ctx.needs_input_grad[2]:  # d/d distances = -log S at the pair
            log_S_pair = log_S.gather(-1, pair)
            zero = (distances == 0) & (log_S_pair == -torch.inf)
            grad_distances = torch.where(zero, 0.0, -log_S_pair) * g
        return grad_z, None, grad_distances, None

    @staticmethod
    def jvp(
        ctx: Any, z_dot: Tensor | None, _: None, d_dot: Tensor | None, __: None
    ) -> tuple[Tensor, None]:
        """Forward mode (torch.func.jvp, jacfwd, hessian)."""
        z, pair, distances, log_S = ctx.saved_tensors
        change = torch.zeros(pair.shape[:-1], dtype=z.dtype, device=z.device)
        if z_dot is not None:
            width = distances.sum(dim=-1)
            change = change + width * (torch.exp(log_S) * z_dot).sum(dim=-1)
            change = change - (distances * z_dot.gather(-1, pair)).sum(dim=-1)
        if d_dot is not None:
            log_S_pair = log_S.gather(-1, pair)
            zero = (distances == 0) & (log_S_pair == -torch.inf)
            log_S_pair = torch.where(zero, 0.0, log_S_pair)
            change = change - (log_S_pair * d_dot).sum(dim=-1)
        return reduce_loss(change, ctx.reduction), None


class _DistributionFocalLossNoJvp(_DistributionFocalLoss):
    """The same, without forward mode: what ``torch.compile`` traces (dynamo
    cannot trace a custom ``jvp``)."""

    jvp = torch.autograd.Function.jvp


def distribution_focal_loss(
    logits: TensorLike,
    y: TensorLike,
    bins: int | TensorLike | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Distribution Focal Loss (GFL, Li et al. 2020) of a continuous
    target ``y``.

    With :math:`S = \operatorname{softmax}(z)` over the last axis (the bin
    axis) and :math:`y_i \le y \le y_{i+1}`:

    .. math::
        \mathrm{DFL} = -\bigl((y_{i+1} - y) \log S_i
                              + (y - y_i) \log S_{i+1}\bigr)

    exactly this formula: with bins of spacing 1 it is cross-entropy
    against :func:`two_hot`, with other spacings it is that times
    :math:`y_{i+1} - y_i`. Its formula-shaped version is its
    namesake in :mod:`ce_lib.reference`. A term of weight 0
    is 0 (:math:`0 \log 0 = 0`): with ``y`` on a bin, a masked
    (:math:`-\infty`) neighbour does not matter. Over finite logits the
    loss has no minimum, only an infimum, :math:`(y_{i+1} - y_i)\,H_b(s)`
    with :math:`s = (y_{i+1} - y) / (y_{i+1} - y_i)`, approached as
    :math:`S_i \to s`, :math:`S_{i+1} \to 1 - s` and every other bin's
    probability goes to 0; there the :func:`integral` equals ``y``.

    A target on an interior bin, :math:`y = y_k`, lies in two intervals;
    the left neighbour is then :math:`i = k`, the interval to its right
    (on the last bin, the last interval): for unit bins that is
    mmdetection's and YOLO's ``floor(y)``. With intervals of different
    widths DFL therefore jumps at an interior bin, from
    :math:`(y_k - y_{k-1})(-\log S_k)` just below it to
    :math:`(y_{k+1} - y_k)(-\log S_k)` on it, while cross-entropy against
    :func:`two_hot` does not jump. Detectors clamp targets beyond the top
    bin before the loss (GFL to ``reg_max - 0.1``, YOLO to
    ``reg_max - 1.01``); this function raises instead (below).

    Args:
        logits: :math:`z`, shape ``(..., K)``: K bin logits per target.
        y: targets, shape ``(...)``, each in :math:`[y_0, y_{K-1}]` (the
            last bin included).
        bins: ``None`` (default) or ``K`` for bins at 0, ..., K-1 (then
            this equals the DFL of GFL and mmdetection; a mean over the 4
            box sides gives the YOLO value), or a 1-D strictly increasing
            tensor of ``K`` bin positions.
        reduction: ``'none'``: the loss of every target, shape ``(...)``;
            ``'mean'`` (default): their mean; ``'sum'``: their sum.

    Returns:
        The loss, in ``logits``' floating dtype (float16 and bfloat16 are
        computed in float32, and so are the bin positions and ``y``: with
        integer bins, positions above 256 stay exact).

    Gradients flow to ``logits``, ``y`` and bin positions, to every order.

    Validation (while :class:`ce_lib.validation` is on, the default):
    ``y`` outside the bins or NaN (mmdetection: IndexError for
    y = K - 1), bins not finite or not strictly increasing, and a loss
    that came out NaN (NaN or :math:`+\infty` logits, or all K logits
    :math:`-\infty`) raise :class:`ValueError`: up to four host syncs.
    Shapes, the number of bins and ``'mean'`` of an empty input are always
    checked.

    Derived in chapter 4 (``chapters/04-distribution-focal-loss``).

    Examples:
        >>> from ce_lib import distribution_focal_loss
        >>> round(distribution_focal_loss([0.0, 1, 2, 3, 4], 1.25).item(), 6)
        3.201914
        >>> import torch  # uniform logits: log K whatever y is
        >>> loss = distribution_focal_loss(torch.zeros(2, 16), [0.0, 7.5])
        >>> round(loss.item(), 6)  # log 16
        2.772589
    """
    z = _checks.as_float_tensor(logits, "logits")
    _checks.check_reduction(reduction)
    y_shape = _checks.as_tensor(y).shape
    if z.dim() == 0 or z.shape[:-1] != y_shape:
        raise ValueError(
            f"logits must have shape y.shape + (K,) = {tuple(y_shape)} + "
            f"(K,); got {tuple(z.shape)}"
        )
    _checks.check_not_empty(z.shape[:-1].numel(), reduction, "y")
    y, positions = _targets(y, z, bins, z.shape[-1])
    i, to_right, from_left = _neighbours(y, positions, _is_unit(bins))
    pair = i[..., None] + torch.arange(2, device=i.device)  # bins i, i + 1
    distances = torch.stack((to_right, from_left), dim=-1)
    function = (
        _DistributionFocalLossNoJvp
        if torch.compiler.is_compiling()
        else _DistributionFocalLoss
    )
    result, _ = function.apply(z.to(y.dtype), pair, distances, reduction)
    if _checks.validation_enabled():
        _checks.explain_bad_loss(
            result,
            _checks.softmax_causes(lambda: z, "bin"),
            "the loss came out NaN from valid inputs",
        )
    return result.to(z.dtype)


def integral(
    logits: TensorLike, bins: int | TensorLike | None = None
) -> Tensor:
    r"""GFL's Integral: the expectation of the bins,
    :math:`\hat y = \sum_k S_k\, y_k`.

    Computed by its namesake in :mod:`ce_lib.reference`.

    Args:
        logits: :math:`z`, shape ``(..., K)``;
            :math:`S = \operatorname{softmax}(z)` over the last axis (the
            bin axis).
        bins: ``None`` or ``K`` for bins at 0, ..., K-1, or a 1-D strictly
            increasing tensor of ``K`` bin positions.

    Returns:
        :math:`\hat y`, shape ``(...)``, in ``logits``' floating dtype
        (float16 and bfloat16 are computed in float32); always within
        :math:`[y_0, y_{K-1}]`. Differentiable in ``logits`` and the bins.

    Validation (while :class:`ce_lib.validation` is on, the default): bins
    not finite or not strictly increasing, and a result that came out NaN
    (NaN or :math:`+\infty` logits, or all K logits :math:`-\infty`), raise
    :class:`ValueError`: a look at the result, up to three host syncs.

    Used in chapter 4 (``chapters/04-distribution-focal-loss``).

    Examples:
        >>> import torch
        >>> from ce_lib import integral
        >>> S = torch.tensor([0.0, 0.0, 0.0, 0.7, 0.3])
        >>> round(integral(S.log()).item(), 6)  # 0.7 * 3 + 0.3 * 4
        3.3
    """
    z = _checks.as_float_tensor(logits, "logits")
    if z.dim() == 0:
        raise ValueError("logits must have shape (..., K); got a scalar")
    dtype = _checks.compute_dtype(z.dtype)
    positions = _checks.check_bins(bins, z.shape[-1], like=z, dtype=dtype)
    y_hat = reference.integral(z.to(dtype), positions)
    if _checks.validation_enabled():
        _checks.explain_bad_loss(
            y_hat,
            _checks.softmax_causes(lambda: z, "bin"),
            "the Integral came out NaN from valid inputs",
        )
    return y_hat.to(z.dtype)
