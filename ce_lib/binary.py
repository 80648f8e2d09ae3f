"""Binary cross-entropy, from probabilities and from logits (chapter 1,
``chapters/01-binary-cross-entropy.ipynb``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ce_lib import _checks
from ce_lib._checks import TensorLike


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class _BinaryCrossEntropy(torch.autograd.Function):
    """-(y log p + (1-y) log(1-p)) with the gradient written out, so that 0/0 reads as 0."""

    @staticmethod
    def forward(ctx: Any, p: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(p, y)
        loss = -(torch.xlogy(y, p) + torch.xlogy(1 - y, 1 - p))  # xlogy: 0 log 0 = 0
        return loss + 0.0  # turns -0.0 into 0.0

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        p, y = ctx.saved_tensors
        grad_p = grad_y = None
        if ctx.needs_input_grad[0]:
            # dl/dp = (1-y)/(1-p) - y/p; a term whose label weight is 0 contributes 0
            grad_p = torch.where(y == 1, 0.0, (1 - y) / (1 - p)) - torch.where(y == 0, 0.0, y / p)
            grad_p = grad * grad_p
        if ctx.needs_input_grad[1]:
            grad_y = grad * (torch.log1p(-p) - torch.log(p))  # dl/dy = log(1-p) - log p
        return grad_p, grad_y


def binary_cross_entropy(p: TensorLike, y: TensorLike, reduction: str = "mean") -> Tensor:
    r"""Binary cross-entropy from probabilities, eq. (1) of chapter 1.

    .. math::
        \ell = -\bigl(y \log p + (1 - y) \log(1 - p)\bigr)

    elementwise, with the convention :math:`0 \log 0 = 0` (computed with ``torch.xlogy``).

    Args:
        p: predicted probability of class 1, :math:`p_1`, any shape, entries in [0, 1].
        y: label, the same shape as ``p``: 0 or 1, or a soft label in [0, 1].
        reduction: ``'none'`` returns the loss of every element (shape of ``p``);
            ``'mean'`` (default) the mean over all elements; ``'sum'`` their sum.

    Returns:
        The loss, in ``p``'s floating dtype (float16 and bfloat16 are computed in float32).

    Edge cases: a certain and right prediction (``p = y``, both 0 or 1) gives exactly 0; a
    certain and wrong one (``p = 0, y = 1`` or ``p = 1, y = 0``) gives ``+inf``, where
    ``torch.nn.functional.binary_cross_entropy`` clamps each log at -100 and returns 100.
    ``p`` or ``y`` outside [0, 1] or NaN, different shapes, or ``'mean'`` of an empty input
    raise :class:`ValueError`. Gradients flow to ``p`` (and to ``y``); at ``p = y`` in {0, 1}
    the gradient of the vanishing term is taken as 0. Derived in chapter 1,
    ``chapters/01-binary-cross-entropy.ipynb``.
    """
    p = _checks.as_float_tensor(p, "p")
    y = _checks.as_float_tensor(y, "y", like=p)
    _checks.check_reduction(reduction)
    _checks.check_same_shape(p, y, "p", "y")
    _checks.check_range(p, "p", 0.0, 1.0)
    _checks.check_range(y, "y", 0.0, 1.0)
    _checks.check_not_empty(p.numel(), reduction, "p")
    dtype = _checks.compute_dtype(p.dtype)
    loss = _BinaryCrossEntropy.apply(p.to(dtype), y.to(dtype))
    return _reduce(loss, reduction).to(p.dtype)


class _BinaryCrossEntropyWithLogits(torch.autograd.Function):
    """The loss from logits, reduced inside, with the closed-form gradient sigma(z) - y."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, y: Tensor, pos_weight: Tensor | None, reduction: str) -> Tensor:
        ctx.save_for_backward(z, y, pos_weight)
        ctx.reduction = reduction
        positive_part = torch.relu(z)  # max(z, 0)
        minus_abs_z = torch.add(z, positive_part, alpha=-2)  # z - 2 max(z, 0) = -|z|, exactly
        softplus_tail = minus_abs_z.exp_().log1p_()  # log(1 + e^{-|z|}), never overflows
        if pos_weight is not None:
            # -(pw*y*log sigma(z) + (1-y)*log sigma(-z)) = (1-y)*z + (1 + (pw-1)*y) * softplus(-z)
            log_weight = (pos_weight - 1) * y + 1
            softplus_minus_z = positive_part.sub_(z).add_(softplus_tail)  # max(-z, 0) + log(1 + e^{-|z|})
            return _reduce((1 - y) * z + log_weight * softplus_minus_z, reduction)
        hinge = positive_part.addcmul_(z, y, value=-1)  # max(z, 0) - z*y, never negative
        if reduction == "none":
            return hinge.add_(softplus_tail)  # max(z, 0) - z*y + log(1 + e^{-|z|})
        total = hinge.sum() + softplus_tail.sum()  # two sums of non-negative terms
        return total / z.numel() if reduction == "mean" else total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, y, pos_weight = ctx.saved_tensors
        if ctx.reduction == "mean":
            grad = grad / z.numel()
        grad_z = grad_y = grad_pw = None
        if ctx.needs_input_grad[0]:
            if pos_weight is None:
                grad_z = torch.sigmoid(z).sub_(y)  # dl/dz = sigma(z) - y
            else:  # dl/dz = (1 + (pw-1)*y) * sigma(z) - pw*y
                grad_z = ((pos_weight - 1) * y + 1) * torch.sigmoid(z) - pos_weight * y
            grad_z.mul_(grad)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            softplus_neg = torch.nn.functional.softplus(-z)  # -log sigma(z)
            if ctx.needs_input_grad[1]:  # dl/dy = -z + (pw - 1) * softplus(-z)
                grad_y = -z if pos_weight is None else -z + (pos_weight - 1) * softplus_neg
                grad_y = grad_y * grad
            if ctx.needs_input_grad[2]:  # dl/dpw = y * softplus(-z)
                grad_pw = (grad * y * softplus_neg).sum_to_size(pos_weight.shape)
        return grad_z, grad_y, grad_pw, None


def binary_cross_entropy_with_logits(
    z: TensorLike, y: TensorLike, reduction: str = "mean", pos_weight: TensorLike | None = None
) -> Tensor:
    r"""Binary cross-entropy from logits, :math:`p_1 = \sigma(z)`, computed stably.

    .. math::
        \ell = -\bigl(y \log \sigma(z) + (1 - y) \log \sigma(-z)\bigr)
             = \max(z, 0) - z\,y + \log\bigl(1 + e^{-|z|}\bigr)

    The right-hand form never overflows (finite for every finite ``z``, e.g. ``|z| = 1e4`` in
    float32) and its gradient is :math:`\sigma(z) - y`. With ``pos_weight`` :math:`w_+`, as in
    torch, :math:`\ell = -\bigl(w_+\,y \log \sigma(z) + (1 - y) \log \sigma(-z)\bigr)`.

    Args:
        z: logits, any shape.
        y: labels, the same shape as ``z``: 0 or 1, or soft labels (not range-checked, as in torch).
        reduction: ``'none'`` returns the loss of every element (shape of ``z``);
            ``'mean'`` (default) the mean over all elements; ``'sum'`` their sum.
        pos_weight: weight :math:`w_+` of the positive term, broadcastable to ``z``'s shape
            (typically one per class, shape ``(C,)``), or ``None`` for 1.

    Returns:
        The loss, in ``z``'s floating dtype (float16 and bfloat16 are computed in float32).

    Edge cases: NaN in ``z`` or ``y``, or an infinite input that makes the loss NaN, raises
    :class:`ValueError` naming that input (checked on the result, so the check costs almost
    nothing); so do different shapes and ``'mean'`` of an empty input. Derived in chapter 1, ``chapters/01-binary-cross-entropy.ipynb``.
    """
    z = _checks.as_float_tensor(z, "z")
    y = _checks.as_float_tensor(y, "y", like=z)
    _checks.check_reduction(reduction)
    _checks.check_same_shape(z, y, "z", "y")
    _checks.check_not_empty(z.numel(), reduction, "z")
    dtype = _checks.compute_dtype(z.dtype)
    if pos_weight is not None:
        pos_weight = _checks.as_float_tensor(pos_weight, "pos_weight", like=z).to(dtype)
        _checks.check_broadcastable(pos_weight, z.shape, "pos_weight", "z")
    loss = _BinaryCrossEntropyWithLogits.apply(z.to(dtype), y.to(dtype), pos_weight, reduction)
    inputs = dict(z=z, y=y) if pos_weight is None else dict(z=z, y=y, pos_weight=pos_weight)
    _checks.explain_nan(loss, **inputs)  # NaN or inf in an input makes the loss NaN
    return loss.to(z.dtype)
