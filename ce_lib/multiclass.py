"""Multiclass cross-entropy from logits, with torch's options (chapter 2,
``chapters/02-multiclass-cross-entropy.ipynb``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ce_lib import _checks
from ce_lib._checks import TensorLike


class _CrossEntropyWithIndices(torch.autograd.Function):
    """Class-index targets: one log_softmax forward, the closed-form gradient backward.

    ``row_weight`` is w[y_n] (0 on ignored rows), ``kept`` is 1 on rows that are not ignored,
    ``weight`` the class weights or None, ``denominator`` what ``'mean'`` divides by.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, target: Tensor, row_weight: Tensor, kept: Tensor,
                weight: Tensor | None, smoothing: float, reduction: str, denominator: Tensor) -> Tensor:
        log_p = torch.log_softmax(logits, dim=1)
        nll = -log_p.gather(1, target[:, None]).squeeze(1)  # -log p_{n, y_n}
        _checks.check_no_nan(nll, "logits must not contain NaN or +inf")
        loss = (1 - smoothing) * row_weight * nll
        if smoothing > 0:  # (eps/C) * sum_c w_c * (-log p_{n,c}), on rows that are not ignored
            smooth = -(log_p @ weight) if weight is not None else -log_p.sum(dim=1)
            loss = loss + (smoothing / logits.shape[1]) * smooth * kept
        ctx.save_for_backward(log_p, target, row_weight, kept, weight, denominator)
        ctx.smoothing, ctx.reduction = smoothing, reduction
        if reduction == "mean":
            return loss.sum() / denominator
        return loss.sum() if reduction == "sum" else loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        log_p, target, row_weight, kept, weight, denominator = ctx.saved_tensors
        eps, C = ctx.smoothing, log_p.shape[1]
        scale = grad / denominator if ctx.reduction == "mean" else grad
        scale = scale.expand(row_weight.shape)  # one factor per row
        # dl_n/dz_nk = p_nk * ((1-eps) w[y_n] + (eps/C) sum_c w_c) - (1-eps) w[y_n] [k = y_n] - (eps/C) w_k
        hit = (1 - eps) * scale * row_weight
        total = hit
        if eps > 0:
            weight_sum = weight.sum() if weight is not None else C
            total = hit + (eps / C) * weight_sum * scale * kept
        grad_logits = torch.exp(log_p).mul_(total[:, None])
        if eps > 0:
            ones = torch.ones(C, dtype=log_p.dtype, device=log_p.device)
            grad_logits.addr_(scale * kept, weight if weight is not None else ones, alpha=-eps / C)
        grad_logits.scatter_add_(1, target[:, None], -hit[:, None])
        return grad_logits, None, None, None, None, None, None, None


def cross_entropy(
    logits: TensorLike,
    target: TensorLike,
    weight: TensorLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Cross-entropy between the softmax of ``logits`` and a target, as
    ``torch.nn.functional.cross_entropy``.

    With class indices :math:`y_n`, class weights :math:`w_c` (1 if ``weight`` is None) and
    :math:`p_{n,c} = \operatorname{softmax}(z_n)_c`:

    .. math::
        \mathrm{CE}_n = -(1 - \varepsilon)\, w_{y_n} \log p_{n, y_n}
                        - \frac{\varepsilon}{C} \sum_c w_c \log p_{n, c}

    With class probabilities :math:`y_{n,c}` as target (smoothed to
    :math:`(1 - \varepsilon) y_{n,c} + \varepsilon / C`):
    :math:`\mathrm{CE}_n = -\sum_c w_c\, y_{n,c} \log p_{n,c}`.

    Args:
        logits: :math:`z`, shape ``(N, C)``, or ``(C,)`` for one sample.
        target: class indices, shape ``(N,)`` (``()`` for one sample), integer dtype, in
            ``[0, C)`` or equal to ``ignore_index``; or class probabilities, the shape of
            ``logits``, floating dtype, entries in [0, 1] (rows are not checked to sum to 1).
        weight: class weights :math:`w_c`, shape ``(C,)``, or None.
        ignore_index: rows whose target equals this index contribute 0 and are left out of
            the mean. If it is also a real class, that class's logit still sits in every
            softmax denominator (as in torch, issue #63004). Only for class indices: with
            probability targets any value but the default raises :class:`ValueError`.
        reduction: ``'none'``: the loss of every row, shape ``(N,)`` (0 on ignored rows);
            ``'sum'``: their sum; ``'mean'`` (default): with class indices the **weighted**
            mean :math:`\sum_n \mathrm{CE}_n / \sum_n w_{y_n}` over rows not ignored (both
            smoothing terms share this denominator); with probabilities the sum divided by N.
        label_smoothing: :math:`\varepsilon \in [0, 1]`.

    Returns:
        The loss, in ``logits``' floating dtype (float16 and bfloat16 are computed in float32).

    Edge cases: where torch returns NaN for ``'mean'`` of nothing (an empty batch, every row
    ignored, or target weights summing to 0), this raises :class:`ValueError`. So do a class
    index outside ``[0, C)`` (torch: IndexError), NaN or +inf logits (torch: NaN), mismatched
    shapes, ``weight`` of the wrong shape and ``label_smoothing`` outside [0, 1]. With class
    weights, label smoothing is **not** cross-entropy against the smoothed target with those
    weights: it follows torch's rule above (PyTorch issue #104776). Derived in chapter 2,
    ``chapters/02-multiclass-cross-entropy.ipynb``.
    """
    z = _checks.as_float_tensor(logits, "logits")
    target = _checks.as_tensor(target, like=z)
    _checks.check_reduction(reduction)
    _checks.check_scalar_range(label_smoothing, "label_smoothing", 0.0, 1.0)
    one_sample = z.dim() == 1
    if one_sample:
        z, target = z[None], target[None]
    if z.dim() != 2:
        raise ValueError(f"logits must have shape (N, C) or (C,); got {tuple(z.shape)}")
    N, C = z.shape
    dtype = _checks.compute_dtype(z.dtype)
    if weight is not None:
        weight = _checks.as_float_tensor(weight, "weight", like=z).to(dtype)
        if weight.shape != (C,):
            raise ValueError(f"weight must have shape (C,) = ({C},); got {tuple(weight.shape)}")

    if target.is_floating_point():
        loss = _cross_entropy_with_probabilities(z.to(dtype), target.to(dtype), weight,
                                                 ignore_index, reduction, float(label_smoothing))
    else:
        if target.dtype == torch.bool or target.shape != (N,):
            raise ValueError(f"target must be class indices of shape (N,) = ({N},) and an integer dtype, "
                             f"or probabilities of shape {(N, C)}; got {tuple(target.shape)} {target.dtype}")
        target = target.long()
        kept = target != ignore_index
        safe_target = torch.where(kept, target, 0)
        if N and not bool(((safe_target >= 0) & (safe_target < C)).all()):
            bad = target[kept & ((target < 0) | (target >= C))]
            raise ValueError(f"target must be a class index in [0, {C}) or ignore_index={ignore_index}; "
                             f"got {bad[0].item()}")
        kept = kept.to(dtype)
        row_weight = kept if weight is None else weight[safe_target] * kept
        denominator = row_weight.sum()
        if reduction == "mean" and not bool(denominator > 0):
            raise ValueError("reduction='mean' has nothing to average: the batch is empty, every target "
                             "is ignore_index, or the weights of the targets sum to 0")
        loss = _CrossEntropyWithIndices.apply(z.to(dtype), safe_target, row_weight, kept, weight,
                                              float(label_smoothing), reduction, denominator)
    if one_sample and reduction == "none":
        loss = loss[0]
    return loss.to(z.dtype)


def _cross_entropy_with_probabilities(z: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
                                      reduction: str, smoothing: float) -> Tensor:
    """Probability targets, with plain autograd: -sum_c w_c y_nc log p_nc per row."""
    _checks.check_same_shape(z, target, "logits", "target")
    if ignore_index != -100:
        raise ValueError(f"ignore_index is only for class-index targets; got ignore_index={ignore_index} "
                         "with probability targets")
    _checks.check_range(target, "target", 0.0, 1.0)
    _checks.check_not_empty(z.shape[0], reduction, "logits")
    N, C = z.shape
    if smoothing > 0:
        target = (1 - smoothing) * target + smoothing / C
    terms = target * torch.log_softmax(z, dim=1)
    if weight is not None:
        terms = terms * weight
    loss = -terms.sum(dim=1)
    _checks.check_no_nan(loss, "logits must not contain NaN or +inf")
    if reduction == "mean":
        return loss.sum() / N
    return loss.sum() if reduction == "sum" else loss
