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

    ``unit`` says the bins are 0, 1, ..., K-1, where i is simply floor(y) (faster).
    """
    if unit:
        i = y.detach().floor().long().clamp_(max=bins.numel() - 2)
        y_i = i.to(y.dtype)
        return i, y_i + 1 - y, y - y_i
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
    """One log_softmax, both neighbours gathered at once; the closed-form gradient backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, i: Tensor, to_right: Tensor, from_left: Tensor,
                reduction: str) -> Tensor:
        log_S = torch.log_softmax(logits, dim=1)
        pair = torch.stack((i, i + 1), dim=1)
        log_S_pair = log_S.gather(1, pair)  # log S_i, log S_{i+1}
        _checks.check_no_nan(log_S_pair, "logits must not contain NaN or +inf")
        loss = -(to_right * log_S_pair[:, 0] + from_left * log_S_pair[:, 1])
        ctx.save_for_backward(log_S, pair, log_S_pair, to_right, from_left)
        ctx.reduction = reduction
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        log_S, pair, log_S_pair, to_right, from_left = ctx.saved_tensors
        scale = grad / log_S.shape[0] if ctx.reduction == "mean" else grad
        scale = scale.expand(to_right.shape)
        grad_logits = None
        if ctx.needs_input_grad[0]:
            # dl/dz_k = (y_{i+1} - y_i) S_k - (y_{i+1} - y) [k = i] - (y - y_i) [k = i + 1]
            grad_logits = torch.exp(log_S).mul_((scale * (to_right + from_left))[:, None])
            grad_logits.scatter_add_(1, pair, -scale[:, None] * torch.stack((to_right, from_left), dim=1))
        # the distances carry y's (and the bins') gradient: dl/d(y_{i+1} - y) = -log S_i, ...
        grad_to_right = -scale * log_S_pair[:, 0] if ctx.needs_input_grad[2] else None
        grad_from_left = -scale * log_S_pair[:, 1] if ctx.needs_input_grad[3] else None
        return grad_logits, None, grad_to_right, grad_from_left, None


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
    loss = _DistributionFocalLoss.apply(z.to(dtype).reshape(-1, K), i, to_right, from_left, reduction)
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
