"""Binary cross-entropy, from probabilities and from logits (chapter 1,
``chapters/01-binary-cross-entropy.ipynb``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ce_lib import _checks, reference
from ce_lib._checks import TensorLike, reduce_loss


def binary_cross_entropy(
    p: TensorLike, y: TensorLike, reduction: str = "mean"
) -> Tensor:
    r"""Binary cross-entropy from probabilities.

    .. math::
        \ell = -\bigl(y \log p + (1 - y) \log(1 - p)\bigr)

    elementwise, with :math:`0 \log 0 = 0`. Computed by its namesake in
    :mod:`ce_lib.reference`, with :math:`\log(1 - p)` as ``log1p(-p)``, so
    a tiny ``p`` keeps its relative accuracy (at ``p = 1e-9``, ``y = 0``
    the loss is ``1e-9``, also in float32). Elementwise: there is no class
    axis.

    Args:
        p: predicted probability of class 1, :math:`p_1`, any shape, entries
            in [0, 1].
        y: label, the same shape as ``p``: 0 or 1, or a soft label in
            [0, 1].
        reduction: ``'none'`` returns the loss of every element (shape of
            ``p``); ``'mean'`` (default) the mean over all elements;
            ``'sum'`` their sum.

    Returns:
        The loss, in ``p``'s floating dtype (float16 and bfloat16 are
        computed in float32).

    Gradients flow to ``p`` and ``y``, to every order. Differences from
    torch's :func:`~torch.nn.functional.binary_cross_entropy`: a certain
    and wrong prediction (``p = 0, y = 1`` or ``p = 1, y = 0``) gives
    ``+inf``, where torch clamps each log at -100 and returns 100; at a
    certain and right prediction (``p = y`` in {0, 1}) the loss is exactly
    0 and its gradient finite (the vanishing term contributes 0);
    ``p = -0.0`` counts as ``+0.0``.

    Validation (while :class:`ce_lib.validation` is on, the default):
    ``p`` or ``y`` outside [0, 1] or NaN raise :class:`ValueError`; two
    reductions and two host syncs. Different shapes and ``'mean'`` of an
    empty input always raise.

    Derived in chapter 1 (``chapters/01-binary-cross-entropy``).

    Examples:
        >>> from ce_lib import binary_cross_entropy
        >>> loss = binary_cross_entropy([0.9, 0.2], [1.0, 0.0], "none")
        >>> [round(v, 4) for v in loss.tolist()]  # -log 0.9, -log 0.8
        [0.1054, 0.2231]
        >>> binary_cross_entropy([0.0, 1.0], [1.0, 0.0], "none").tolist()
        [inf, inf]
    """
    p = _checks.as_float_tensor(p, "p")
    y = _checks.as_float_tensor(y, "y", like=p)
    _checks.check_reduction(reduction)
    _checks.check_same_shape(p, y, "p", "y")
    _checks.check_not_empty(p.numel(), reduction, "p")
    if _checks.validation_enabled():
        _checks.check_range(p, "p", 0.0, 1.0)
        _checks.check_range(y, "y", 0.0, 1.0)
    dtype = _checks.compute_dtype(p.dtype)
    p_ = p.to(dtype) + 0.0  # -0.0 + 0.0 = +0.0: the sign of 0 must not
    # flip the gradient
    loss = reference.binary_cross_entropy(p_, y.to(dtype)) + 0.0  # no -0.0
    return _checks.reduce_loss(loss, reduction).to(p.dtype)


class _BinaryCrossEntropyWithLogits(torch.autograd.Function):
    r"""The loss of :math:`p_1 = \sigma(z)`, reduced, with its gradient
    written out.

    Forward: :math:`\ell = \max(z, 0) - z y + \log(1 + e^{-|z|})` in as
    few passes over the data as possible (the two parts are reduced
    separately, so their elementwise sum is never stored). Backward:
    :math:`\partial\ell/\partial z = \sigma(z) - y`, and the derivatives
    in ``y`` and :math:`w_+`, from the saved inputs. For a first-order
    backward (grad mode off, the usual ``loss.backward()``) it works in
    place; under ``create_graph=True`` or :mod:`torch.func` the same
    formulas run out of place, so that autograd can differentiate them
    again (second derivatives).
    """

    generate_vmap_rule = True  # forward and backward are plain torch code

    @staticmethod
    def forward(
        z: Tensor, y: Tensor, pos_weight: Tensor | None, reduction: str
    ) -> Tensor:
        if pos_weight is None:  # max(z, 0) - z y + log(1 + e^{-|z|})
            positive_part = torch.relu(z)  # max(z, 0)
            hinge = torch.addcmul(positive_part, z, y, value=-1)
            # z - 2 max(z, 0) = -|z|, in place: log(1 + e^{-|z|}) <= log 2
            tail = positive_part.mul_(-2).add_(z).exp_().log1p_()
            if reduction == "none":
                return hinge.add_(tail)
            return reduce_loss(hinge, reduction) + reduce_loss(tail, reduction)
        # -(w y log p_1 + (1 - y) log p_0), as the reference writes it
        loss = reference.binary_cross_entropy_with_logits(z, y, pos_weight)
        return reduce_loss(loss, reduction)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        z, y, pos_weight, reduction = inputs
        ctx.save_for_backward(z, y, pos_weight)
        ctx.save_for_forward(z, y, pos_weight)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, y, pos_weight = ctx.saved_tensors
        if ctx.reduction == "mean":  # the gradient of each element's loss
            grad = grad / z.numel()
        needs = ctx.needs_input_grad[:3]
        if needs == (True, False, False) and pos_weight is None:
            if not torch.is_grad_enabled():  # first order: in place
                return torch.sigmoid(z).sub_(y).mul_(grad), None, None, None
        d_z, d_y, d_w = _partials(z, y, pos_weight, needs)
        grad_z = None if d_z is None else d_z * grad
        grad_y = None if d_y is None else d_y * grad
        grad_w = None if d_w is None else d_w * grad
        if grad_w is not None:
            grad_w = grad_w.sum_to_size(pos_weight.shape)
        return grad_z, grad_y, grad_w, None

    @staticmethod
    def jvp(ctx: Any, *tangents: Tensor | None) -> Tensor:
        """Forward mode (torch.func.jvp, jacfwd, hessian): the partial
        derivatives times the tangents, reduced."""
        z, y, pos_weight = ctx.saved_tensors
        needs = tuple(t is not None for t in tangents[:3])
        change = torch.zeros_like(z)
        for d, t in zip(_partials(z, y, pos_weight, needs), tangents[:3]):
            if d is not None:
                change = change + d * t
        return reduce_loss(change, ctx.reduction)


class _BinaryCrossEntropyWithLogitsNoJvp(_BinaryCrossEntropyWithLogits):
    """The same, without forward mode: what ``torch.compile`` traces (dynamo
    cannot trace a custom ``jvp``, and compiles no forward mode anyway)."""

    jvp = torch.autograd.Function.jvp


def _partials(
    z: Tensor, y: Tensor, pos_weight: Tensor | None, needs: tuple[bool, ...]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The partial derivatives of the elementwise loss in z, y and w_+ (None
    where not needed), as differentiable expressions of the inputs."""
    w = 1.0 if pos_weight is None else pos_weight
    d_z = d_y = d_w = None
    if needs[0] and pos_weight is None:
        d_z = torch.sigmoid(z) - y  # sigma(z) - y
    elif needs[0]:
        d_z = (1 + (w - 1) * y) * torch.sigmoid(z) - w * y
    if needs[1] or needs[2]:
        minus_log_p1 = -reference.log_sigmoid(z)  # -log sigma(z)
        if needs[1]:
            d_y = -z + (w - 1) * minus_log_p1
        if needs[2]:
            d_w = y * minus_log_p1
    return d_z, d_y, d_w


def binary_cross_entropy_with_logits(
    z: TensorLike,
    y: TensorLike,
    reduction: str = "mean",
    pos_weight: TensorLike | None = None,
) -> Tensor:
    r"""Binary cross-entropy from logits, :math:`p_1 = \sigma(z)`, computed
    stably.

    .. math::
        \ell = -\bigl(y \log \sigma(z) + (1 - y) \log \sigma(-z)\bigr)
             = \max(z, 0) - z\,y + \log\bigl(1 + e^{-|z|}\bigr)

    The right-hand form never overflows (finite for every finite ``z``,
    e.g. ``|z| = 1e4`` in float32) and its gradient is
    :math:`\sigma(z) - y`. With ``pos_weight`` :math:`w_+`, as in torch,
    :math:`\ell = -\bigl(w_+\,y \log \sigma(z) + (1 - y) \log
    \sigma(-z)\bigr)`. Its formula-shaped version is its namesake in
    :mod:`ce_lib.reference`. Elementwise: there is no class axis.

    Args:
        z: logits, any shape.
        y: labels, the same shape as ``z``: 0 or 1, or soft labels (not
            range-checked, as in torch).
        reduction: ``'none'`` returns the loss of every element (shape of
            ``z``); ``'mean'`` (default) the mean over all elements;
            ``'sum'`` their sum.
        pos_weight: weight :math:`w_+` of the positive term, broadcastable
            to ``z``'s shape (typically one per class, shape ``(C,)``), or
            ``None`` for 1.

    Returns:
        The loss, in ``z``'s floating dtype (float16 and bfloat16 are
        computed in float32).

    Gradients flow to ``z``, ``y`` and ``pos_weight``, to every order and
    in forward mode too. Differences from torch's
    :func:`~torch.nn.functional.binary_cross_entropy_with_logits`: infinite
    logits raise (with validation on), on both sides, ``z = +inf`` as
    ``z = -inf``, where torch returns NaN or inf depending on the side; a
    ``pos_weight`` that requires grad is differentiated, where torch
    refuses it.

    Validation (while :class:`ce_lib.validation` is on, the default): a
    look at the loss after the fact (one host sync; for ``'none'`` also
    one pass over it): if it is not finite, a :class:`ValueError` names
    the input that is NaN or infinite. Different shapes, a ``pos_weight``
    that does not broadcast and ``'mean'`` of an empty input always raise.
    With validation off, infinite inputs give NaN or inf.

    Derived in chapter 1 (``chapters/01-binary-cross-entropy``).

    Examples:
        >>> import torch
        >>> from ce_lib import binary_cross_entropy_with_logits
        >>> z = torch.tensor([3.0, -2.0, 1e4], requires_grad=True)
        >>> y = torch.tensor([1.0, 1.0, 0.0])
        >>> loss = binary_cross_entropy_with_logits(z, y, "none")
        >>> [round(v, 4) for v in loss.tolist()]  # log(1 + e^{-3}), ...
        [0.0486, 2.1269, 10000.0]
        >>> loss.sum().backward()
        >>> [round(v, 4) for v in z.grad.tolist()]  # sigma(z) - y
        [-0.0474, -0.8808, 1.0]
    """
    z = _checks.as_float_tensor(z, "z")
    y = _checks.as_float_tensor(y, "y", like=z)
    _checks.check_reduction(reduction)
    _checks.check_same_shape(z, y, "z", "y")
    _checks.check_not_empty(z.numel(), reduction, "z")
    dtype = _checks.compute_dtype(z.dtype)
    inputs = {"z": z, "y": y}
    if pos_weight is not None:
        pos_weight = _checks.as_float_tensor(pos_weight, "pos_weight", like=z)
        _checks.check_broadcastable(pos_weight, z.shape, "pos_weight", "z")
        inputs["pos_weight"] = pos_weight
        pos_weight = pos_weight.to(dtype)
    function = (
        _BinaryCrossEntropyWithLogitsNoJvp
        if torch.compiler.is_compiling()
        else _BinaryCrossEntropyWithLogits
    )
    loss = function.apply(z.to(dtype), y.to(dtype), pos_weight, reduction)
    if _checks.validation_enabled():
        _checks.explain_bad_loss(
            loss,
            _checks.non_finite_causes(**inputs),
            "the loss overflowed: the inputs are finite, but so large that "
            f"the loss exceeds the largest {dtype}",
            allow_inf=False,
        )
    return loss.to(z.dtype)
