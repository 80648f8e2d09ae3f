"""Sigmoid focal loss (Lin et al. 2017), for one-vs-rest problems with
many easy negatives (chapter 5,
``05-cross-entropy-in-practice``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from ce_lib import _checks
from ce_lib._checks import TensorLike


def _log_one_minus_p_t(z: Tensor, y: Tensor) -> Tensor:
    """log(1 - p_t) = log(y p_0 + (1 - y) p_1), finite for every finite z.

    A hard label keeps one term: log p_0 for y = 1, log p_1 for y = 0,
    from logsigmoid, which never rounds to log 0. A soft label keeps both,
    and their sum is at least min(y, 1 - y) > 0.
    """
    hard = (y == 0) | (y == 1)
    y_soft = torch.where(hard, 0.5, y)  # keeps the unused branch finite
    soft = torch.log(
        y_soft * torch.sigmoid(-z) + (1 - y_soft) * torch.sigmoid(z)
    )
    log_p1, log_p0 = F.logsigmoid(z), F.logsigmoid(-z)
    return torch.where(y == 1, log_p0, torch.where(y == 0, log_p1, soft))


def _focal_terms(
    z: Tensor, y: Tensor, alpha: float | None, gamma: float
) -> Tensor:
    """alpha_t (1 - p_t)^gamma BCE(z, y), elementwise, no checks."""
    log_p1, log_p0 = F.logsigmoid(z), F.logsigmoid(-z)  # log p_1, log p_0
    bce = -(y * log_p1 + (1 - y) * log_p0)  # binary cross-entropy
    modulating = torch.exp(gamma * _log_one_minus_p_t(z, y))
    loss = modulating * bce  # (1 - p_t)^gamma * BCE
    if alpha is not None:
        alpha_t = alpha * y + (1 - alpha) * (1 - y)
        loss = alpha_t * loss
    return loss


def sigmoid_focal_loss(
    logits: TensorLike,
    target: TensorLike,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Sigmoid focal loss of Lin et al. (2017), elementwise on logits.

    With :math:`p_1 = \sigma(z)`, :math:`p_0 = 1 - p_1`, the probability of
    the label :math:`p_t = p_1 y + p_0 (1 - y)` and the class weight
    :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`:

    .. math::
        \mathrm{FL}(z, y) = -\alpha_t\, (1 - p_t)^{\gamma}
            \bigl(y \log p_1 + (1 - y) \log p_0\bigr)

    that is, binary cross-entropy from logits scaled by
    :math:`\alpha_t (1 - p_t)^\gamma`, which is small for samples the
    model already gets right. :math:`\gamma = 0` with ``alpha=None`` is
    :func:`~ce_lib.binary_cross_entropy_with_logits`. Every element is its
    own binary problem (there is no class axis): for ``C`` labels per
    sample pass logits of shape ``(N, C)``, one sigmoid per class.

    Args:
        logits: :math:`z`, any shape.
        target: :math:`y`, the shape of ``logits``: 0 or 1, or soft labels
            in [0, 1] (then :math:`1 - p_t = y p_0 + (1 - y) p_1`).
        alpha: :math:`\alpha \in [0, 1]`, the weight of the positive
            class (0.25 in the paper and in torchvision), or ``None`` for
            no weighting (:math:`\alpha_t = 1`).
        gamma: focusing parameter :math:`\gamma \ge 0` (2 in the paper).
        reduction: ``'none'`` returns the loss of every element (shape of
            ``logits``); ``'mean'`` (default) the mean over all elements;
            ``'sum'`` their sum. (torchvision defaults to ``'none'``; the
            paper sums and divides by the number of positive anchors,
            which is ``'sum'`` divided by that count.)

    Returns:
        The loss, in ``logits``' floating dtype (float16 and bfloat16 are
        computed in float32).

    The factor :math:`(1 - p_t)^\gamma` is computed as
    :math:`\exp(\gamma \log(1 - p_t))` from ``logsigmoid``, so the loss and
    its derivatives of every order in ``logits`` are finite for every
    finite logit and every :math:`\gamma \ge 0` (including
    :math:`0 < \gamma < 1`, where a literal ``(1 - p) ** gamma`` has an
    infinite slope once :math:`1 - p_t` rounds to 0).

    **Not differentiable in** ``target``: unlike the library's other
    losses, this one treats soft labels as data, and a ``target`` that
    requires grad (or is differentiated by :mod:`torch.func`) raises
    :class:`ValueError`, with validation on or off. The reason is the
    hard labels: there :math:`\log(1 - p_t)` comes from ``logsigmoid``,
    which does not depend on :math:`y`, while its true derivative in
    :math:`y`, :math:`(p_0 - p_1)/(1 - p_t)`, is as large as
    :math:`e^{|z|}` and overflows at saturated logits; a silent zero or
    NaN would be wrong, so the loss refuses. Gradients flow to
    ``logits`` only.

    Edge cases: ``gamma`` negative or not finite, ``alpha`` outside
    [0, 1], ``target`` outside [0, 1] or NaN, a ``target`` that requires
    grad, different shapes, ``'mean'`` of an empty input and NaN or
    infinite logits that make the loss NaN raise :class:`ValueError`.
    Inside ``ce_lib.validation(False)`` the checks that read the data
    (ranges, NaN) are skipped and nothing syncs with the device; the
    requires-grad check reads no data and always runs. Chapter 5,
    ``05-cross-entropy-in-practice``, uses it on an imbalanced data set
    and separates the effect of :math:`\gamma` from that of
    :math:`\alpha`.

    Examples:
        >>> import math, torch
        >>> from ce_lib import sigmoid_focal_loss
        >>> z = torch.tensor([0.0, 3.0, -3.0])
        >>> y = torch.tensor([1.0, 1.0, 0.0])
        >>> loss = sigmoid_focal_loss(z, y, reduction="none")
        >>> [round(v, 6) for v in loss.tolist()]
        [0.043322, 2.7e-05, 8.2e-05]
        >>> round(0.25 * 0.5**2 * math.log(2), 6)  # z = 0: alpha/4 log 2
        0.043322
    """
    z = _checks.as_float_tensor(logits, "logits")
    y = _checks.as_float_tensor(target, "target", like=z)
    _checks.check_reduction(reduction)
    _checks.check_same_shape(z, y, "logits", "target")
    _checks.check_finite_at_least(gamma, "gamma", 0.0)
    if alpha is not None:
        _checks.check_scalar_range(alpha, "alpha", 0.0, 1.0)
    _checks.check_no_grad(y, "target")  # metadata only: always checked
    check = _checks.validation_enabled()
    if check:
        _checks.check_not_empty(z.numel(), reduction, "logits")
        _checks.check_range(y, "target", 0.0, 1.0)
    dtype = _checks.compute_dtype(z.dtype)
    loss = _focal_terms(
        z.to(dtype),
        y.detach().to(dtype),
        None if alpha is None else float(alpha),
        float(gamma),
    )
    if check:
        _checks.explain_nan(loss, logits=z)
    return _checks.reduce_loss(loss, reduction).to(z.dtype)
