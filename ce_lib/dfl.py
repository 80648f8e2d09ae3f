"""Distribution Focal Loss, its two-hot target and the Integral (chapter 4,
``chapters/04-distribution-focal-loss.ipynb``)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ce_lib import _checks
from ce_lib._checks import TensorLike


def _neighbours(y: Tensor, bins: Tensor, unit: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Left index i with y_i <= y <= y_{i+1}, and the distances y_{i+1} - y and y - y_i.

    ``unit`` says the bins are 0, 1, ..., K-1, where y_i is simply floor(y) (faster).
    """
    if unit:
        y_i = y.detach().floor().clamp_(max=bins.numel() - 2)
        from_left = y - y_i
        return y_i.long(), 1 - from_left, from_left
    i = torch.searchsorted(bins, y.detach(), right=True).sub_(1).clamp_(0, bins.numel() - 2)
    return i, bins[i + 1] - y, y - bins[i]


def _unit_bins(bins: int | Any | None) -> bool:
    return bins is None or isinstance(bins, numbers.Integral)


def _check_y(y: Tensor, bins: Tensor) -> None:
    _checks.check_range(y, "y", float(bins[0]), float(bins[-1]))


def two_hot(y: TensorLike, bins: int | TensorLike) -> Tensor:
    r"""The two-neighbour ("two-hot") soft target of a continuous ``y``.

    For :math:`y_i \le y \le y_{i+1}`, bin :math:`i` gets mass
    :math:`(y_{i+1} - y) / (y_{i+1} - y_i)`, bin :math:`i + 1` gets
    :math:`(y - y_i) / (y_{i+1} - y_i)`, every other bin 0; so the masses sum to 1 and their
    expectation :math:`\sum_k m_k y_k` is ``y`` itself.

    Args:
        y: targets, any shape, each in :math:`[y_0, y_{K-1}]` (the last bin included).
        bins: ``K``, for bins at 0, 1, ..., K-1, or a 1-D strictly increasing tensor of the
            ``K`` bin positions.

    Returns:
        Shape ``y.shape + (K,)``, in ``y``'s floating dtype.

    Edge cases: ``y`` equal to a bin puts all its mass there; ``y`` outside the bins or NaN,
    and bins that are not strictly increasing, raise :class:`ValueError`. Derived in
    chapter 4, ``chapters/04-distribution-focal-loss.ipynb``.
    """
    y = _checks.as_float_tensor(y, "y")
    positions = _checks.check_bins(bins, None, like=y).to(y.dtype)
    _check_y(y, positions)
    i, to_right, from_left = _neighbours(y, positions, _unit_bins(bins))
    width = to_right + from_left  # y_{i+1} - y_i
    target = torch.zeros(*y.shape, positions.numel(), dtype=y.dtype, device=y.device)
    target.scatter_(-1, i[..., None], (to_right / width)[..., None])
    target.scatter_(-1, i[..., None] + 1, (from_left / width)[..., None])
    return target


class _DistributionFocalLoss(torch.autograd.Function):
    """One log_softmax, both neighbours gathered at once; the closed-form gradient backward.

    ``pair`` holds the bins (i, i+1) of every row, ``distances`` the weights
    (y_{i+1} - y, y - y_i) of their log-probabilities.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, pair: Tensor, distances: Tensor, reduction: str) -> Tensor:
        log_S = torch.log_softmax(logits, dim=1)
        log_S_pair = log_S.gather(1, pair)  # log S_i, log S_{i+1}
        weighted = distances * log_S_pair
        ctx.save_for_backward(log_S, pair, log_S_pair, distances)
        ctx.reduction = reduction
        if reduction == "none":
            return weighted.sum(dim=1).neg_()  # -((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1})
        total = -weighted.sum()
        return total / len(pair) if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        log_S, pair, log_S_pair, distances = ctx.saved_tensors
        scale = grad / len(pair) if ctx.reduction == "mean" else grad
        scale = scale[:, None] if scale.dim() else scale  # per row, or one number
        grad_logits = grad_distances = None
        if ctx.needs_input_grad[0]:
            # dl/dz_k = (y_{i+1} - y_i) S_k - (y_{i+1} - y) [k = i] - (y - y_i) [k = i + 1]
            width = distances.sum(dim=1, keepdim=True)  # y_{i+1} - y_i
            grad_logits = torch.exp(log_S).mul_(width * scale)
            grad_logits.scatter_add_(1, pair, distances * -scale)
        if ctx.needs_input_grad[2]:  # the distances carry the gradient of y (and of the bins)
            grad_distances = log_S_pair * -scale
        return grad_logits, None, grad_distances, None


def distribution_focal_loss(logits: TensorLike, y: TensorLike, bins: int | TensorLike | None = None,
                            reduction: str = "mean") -> Tensor:
    r"""Distribution Focal Loss (GFL, Li et al. 2020) of a continuous target ``y``.

    With :math:`S = \operatorname{softmax}(z)` over the last axis and :math:`y_i \le y \le y_{i+1}`:

    .. math::
        \mathrm{DFL} = -\bigl((y_{i+1} - y) \log S_i + (y - y_i) \log S_{i+1}\bigr)

    exactly this formula: with bins of spacing 1 it is cross-entropy against
    :func:`two_hot`, with other spacings it is that times :math:`y_{i+1} - y_i`. Its minimum
    over the logits is the binary entropy of :math:`S_i = (y_{i+1} - y) / (y_{i+1} - y_i)`,
    reached where the :func:`integral` equals ``y``.

    Args:
        logits: :math:`z`, shape ``(..., K)``: K bin logits per target.
        y: targets, shape ``(...)``, each in :math:`[y_0, y_{K-1}]` (the last bin included).
        bins: ``None`` (default) or ``K`` for bins at 0, ..., K-1 (then this equals the DFL of
            GFL and mmdetection; a mean over the 4 box sides gives the YOLO value), or a 1-D
            strictly increasing tensor of ``K`` bin positions.
        reduction: ``'none'``: the loss of every target, shape ``(...)``; ``'mean'`` (default):
            their mean; ``'sum'``: their sum.

    Returns:
        The loss, in ``logits``' floating dtype (float16 and bfloat16 are computed in float32).

    Edge cases: an integer ``y`` (on a bin) reduces to cross-entropy on that bin; ``y``
    outside the bins or NaN (mmdetection: IndexError for y = K - 1), NaN or +inf logits,
    shapes that do not match, bins not strictly increasing or not K of them, and ``'mean'``
    of an empty input raise :class:`ValueError`. Derived in chapter 4,
    ``chapters/04-distribution-focal-loss.ipynb``.
    """
    z = _checks.as_float_tensor(logits, "logits")
    y = _checks.as_float_tensor(y, "y", like=z)
    _checks.check_reduction(reduction)
    if z.dim() == 0 or z.shape[:-1] != y.shape:
        raise ValueError(f"logits must have shape y.shape + (K,) = {tuple(y.shape)} + (K,); got {tuple(z.shape)}")
    K = z.shape[-1]
    dtype = _checks.compute_dtype(z.dtype)
    positions = _checks.check_bins(bins, K, like=z).to(dtype)
    y = y.to(dtype)
    _check_y(y, positions)
    _checks.check_not_empty(y.numel(), reduction, "y")
    i, to_right, from_left = _neighbours(y.reshape(-1), positions, _unit_bins(bins))
    pair = i[:, None] + torch.arange(2, device=i.device)  # (i, i + 1) per row
    distances = torch.stack((to_right, from_left), dim=1)
    loss = _DistributionFocalLoss.apply(z.to(dtype).reshape(-1, K), pair, distances, reduction)
    _checks.check_no_nan(loss, "logits must not contain NaN or +inf")
    if reduction == "none":
        loss = loss.reshape(y.shape)
    return loss.to(z.dtype)


def integral(logits: TensorLike, bins: int | TensorLike | None = None) -> Tensor:
    r"""GFL's Integral: the expectation of the bins, :math:`\hat y = \sum_k S_k\, y_k`.

    Args:
        logits: :math:`z`, shape ``(..., K)``; :math:`S = \operatorname{softmax}(z)` over the
            last axis.
        bins: ``None`` or ``K`` for bins at 0, ..., K-1, or a 1-D strictly increasing tensor
            of ``K`` bin positions.

    Returns:
        :math:`\hat y`, shape ``(...)``, in ``logits``' floating dtype (float16 and bfloat16
        are computed in float32); always within :math:`[y_0, y_{K-1}]`.

    Used in chapter 4, ``chapters/04-distribution-focal-loss.ipynb``.
    """
    z = _checks.as_float_tensor(logits, "logits")
    if z.dim() == 0:
        raise ValueError("logits must have shape (..., K); got a scalar")
    dtype = _checks.compute_dtype(z.dtype)
    positions = _checks.check_bins(bins, z.shape[-1], like=z).to(dtype)
    return (torch.softmax(z.to(dtype), dim=-1) @ positions).to(z.dtype)
