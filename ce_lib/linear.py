"""Chunked linear cross-entropy: the output layer and the loss without all
the logits (chapter 6, ``chapters/06-cross-entropy-at-scale.ipynb``)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ce_lib import _checks
from ce_lib._checks import TensorLike

#: The default chunk holds at least this many logits (4 MiB in float32), so
#: that each step of the loop is a large piece of work.
MIN_CHUNK_ELEMENTS = 2**20


def default_chunk_size(N: int, D: int, V: int) -> int:
    """Rows per chunk when ``chunk_size`` is None: D / 2, or more if that
    makes fewer than ``MIN_CHUNK_ELEMENTS`` logits; at least 1, at most N.

    Why D / 2: every chunk adds G^T h to the V x D gradient of the weight,
    one pass over it, so the chunk should be large against V x D; and a
    chunk of D / 2 rows takes half the memory of that gradient, which
    training holds anyway.
    """
    rows = max(D // 2, -(-MIN_CHUNK_ELEMENTS // max(V, 1)))
    return max(1, min(N, rows))


def _logits_into(
    out: Tensor, h: Tensor, W: Tensor, b: Tensor | None
) -> Tensor:
    """``out = h @ W.T + b`` written into the buffer ``out`` (rows of h)."""
    if b is None:
        return torch.mm(h, W.t(), out=out)
    return torch.addmm(b, h, W.t(), out=out)


def _into_grad_(
    e: Tensor, target: Tensor, scale: Tensor, eps: float, total: Tensor
) -> Tensor:
    """Turn e^{z - m} of a chunk into dloss/dz, in place, where ``total`` is
    its row sum (so p = e / total).

    dloss/dz_{n,c} = a_n (p_{n,c} - (1 - eps) [c = y_n] - eps / V), where
    a_n = ``scale[n]`` (0 on ignored rows).
    """
    p = e.mul_((scale / total)[:, None])
    p.scatter_add_(1, target[:, None], (-(1 - eps) * scale)[:, None])
    if eps > 0:
        p.sub_((eps / p.shape[1]) * scale[:, None])
    return p


def _chunk_gradients(
    G: Tensor,
    h: Tensor,
    W: Tensor,
    grads: list[Tensor | None],
    s: int,
    e: int,
) -> None:
    """Add one chunk's share to the gradients, from G = dloss/dz (rows s:e).

    dloss/dh = G W (rows s:e only), dloss/dW += G^T h, dloss/db += sum_n G.
    """
    grad_h, grad_W, grad_b = grads
    if grad_h is not None:
        torch.mm(G, W, out=grad_h[s:e])
    if grad_W is not None:
        grad_W.addmm_(G.t(), h[s:e])
    if grad_b is not None:
        grad_b.add_(G.sum(dim=0))


def _empty_grads(
    needs: tuple[bool, bool, bool], h: Tensor, W: Tensor, has_bias: bool
) -> list[Tensor | None]:
    V, D = W.shape
    return [
        torch.empty_like(h) if needs[0] else None,
        torch.zeros_like(W) if needs[1] else None,
        W.new_zeros(V) if needs[2] and has_bias else None,
    ]


def _recompute_gradients(
    ctx: Any, row_grad: Tensor, needs: tuple[bool, bool, bool]
) -> list[Tensor | None]:
    """Gradients by recomputing each chunk of logits from the saved inputs.

    ``row_grad[n]`` is d(output)/d(loss of row n) times the upstream
    gradient: for 'none' the upstream vector itself, for 'mean' and 'sum'
    the upstream scalar times the reduction's factor.
    """
    h0, W0, b0, target, kept, lse = ctx.saved_tensors
    dtype = lse.dtype
    h, W = h0.to(dtype), W0.to(dtype)
    b = None if b0 is None else b0.to(dtype)
    scale = row_grad.to(dtype) * kept
    grads = _empty_grads(needs, h, W, b is not None)
    rows, (N, V) = ctx.rows, (h.shape[0], W.shape[0])
    buffer = h.new_empty(min(rows, N), V)
    ones = h.new_ones(min(rows, N))
    for s in range(0, N, rows):
        e = min(s + rows, N)
        z = _logits_into(buffer[: e - s], h[s:e], W, b)
        p = z.sub_(lse[s:e, None]).exp_()  # softmax, from the saved lse
        G = _into_grad_(p, target[s:e], scale[s:e], ctx.eps, ones[: e - s])
        _chunk_gradients(G, h, W, grads, s, e)
    return grads


class _LinearCrossEntropy(torch.autograd.Function):
    """The chunked loop, with gradients precomputed in forward for 'mean'
    and 'sum' (the upstream gradient is one number, applied in backward)
    and recomputed chunk by chunk in backward for 'none'."""

    @staticmethod
    def forward(
        ctx: Any,
        h0: Tensor,
        W0: Tensor,
        b0: Tensor | None,
        target: Tensor,
        kept: Tensor,
        eps: float,
        reduction: str,
        rows: int,
        dtype: torch.dtype,
        precompute: tuple[bool, bool, bool] | None,
    ) -> Tensor:
        h, W = h0.to(dtype), W0.to(dtype)
        b = None if b0 is None else b0.to(dtype)
        N, V = h.shape[0], W.shape[0]
        count = kept.sum()
        # a_n: how much row n's loss counts in the result
        scale = kept / count if reduction == "mean" else kept
        loss = h.new_empty(N)
        lse = h.new_empty(N)
        grads = None
        if precompute is not None:
            grads = _empty_grads(precompute, h, W, b is not None)
        buffer = h.new_empty(min(rows, N), V)  # the one chunk of logits
        for s in range(0, N, rows):
            e = min(s + rows, N)
            z = _logits_into(buffer[: e - s], h[s:e], W, b)
            # CE_n = lse_n - (1 - eps) z_{n,y_n} - (eps / V) sum_c z_{n,c}
            z_y = z.gather(1, target[s:e, None]).squeeze(1)
            loss_rows = -(1 - eps) * z_y
            if eps > 0:
                loss_rows -= (eps / V) * z.sum(dim=1)
            m = z.amax(dim=1)
            p = z.sub_(m[:, None]).exp_()  # e^{z - m}, in place
            total = p.sum(dim=1)
            lse[s:e] = m + torch.log(total)
            loss[s:e] = loss_rows + lse[s:e]
            if grads is not None:
                G = _into_grad_(p, target[s:e], scale[s:e], eps, total)
                _chunk_gradients(G, h, W, grads, s, e)
        loss = torch.where(kept.bool(), loss, 0.0)
        ctx.save_for_backward(h0, W0, b0, target, kept, lse)
        ctx.eps, ctx.rows, ctx.reduction = eps, rows, reduction
        ctx.precomputed = grads
        return _checks.reduce_loss(loss, reduction, count)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        needs = tuple(ctx.needs_input_grad[:3])
        h0, W0, b0 = ctx.saved_tensors[:3]
        if ctx.precomputed is not None:
            # Hand over the gradients computed in forward, scaled by the
            # upstream number; drop our reference, so a second backward
            # (retain_graph=True) recomputes instead.
            grads, ctx.precomputed = ctx.precomputed, None
            grads = [None if g is None else g.mul_(grad) for g in grads]
        else:
            kept = ctx.saved_tensors[4]
            if ctx.reduction == "mean":
                row_grad = grad / kept.sum()
            else:
                row_grad = grad
            row_grad = row_grad.expand(kept.shape)
            grads = _recompute_gradients(ctx, row_grad, needs)
        out = [
            None if g is None or not need else g.to(x.dtype)
            for g, need, x in zip(grads, needs, (h0, W0, b0))
        ]
        return (*out, None, None, None, None, None, None, None)


def linear_cross_entropy(
    input: TensorLike,
    linear_weight: TensorLike,
    target: TensorLike,
    *,
    linear_bias: TensorLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Cross-entropy of a linear layer's logits, a chunk of rows at a time:
    ``F.cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``
    without ever holding all N x V logits.

    With hidden states :math:`h_n` (rows of ``input``), the output layer
    :math:`\mathbf{W}` (V x D) and bias :math:`b`, the logits are
    :math:`z_n = \mathbf{W} h_n + b`, and with class indices :math:`y_n`
    and label smoothing :math:`\varepsilon`

    .. math::
        \mathrm{CE}_n = \log \sum_{c=0}^{V-1} e^{z_{n,c}}
            - (1 - \varepsilon)\, z_{n, y_n}
            - \frac{\varepsilon}{V} \sum_{c=0}^{V-1} z_{n,c}.

    The gradients are, with :math:`G_{n,c} = a_n (p_{n,c} - (1-\varepsilon)
    [c = y_n] - \varepsilon / V)` and :math:`a_n` the weight of row
    :math:`n` in the result (1, or 1 / the number of rows kept for
    ``'mean'``, 0 on ignored rows): :math:`\partial/\partial h_n =
    \sum_c G_{n,c} \mathbf{W}_c`, :math:`\partial/\partial \mathbf{W} =
    G^\top h` and :math:`\partial/\partial b = \sum_n G_n`.

    Strategy: the rows are processed ``chunk_size`` at a time, and one
    chunk of logits (``chunk_size`` x V, in one reused buffer) is all that
    is ever alive. For ``'mean'`` and ``'sum'`` the loss is one number, so
    its upstream gradient is one number too: the forward pass turns each
    chunk's logits into its gradient in place and adds it to the
    gradients of ``input``, ``linear_weight`` and ``linear_bias`` at once,
    and backward only multiplies them by the upstream number. That costs
    three matrix products per chunk, as many as the unchunked loss, and
    keeps nothing but the gradients (which training needs anyway). For
    ``'none'`` the upstream gradient is a vector not known in forward, so
    forward keeps one log-sum-exp per row and backward recomputes each
    chunk's logits (a fourth product). The forward pass does the gradient
    work only when autograd will need it (grad mode on and an argument
    that requires grad); a second backward through the same graph
    (``retain_graph=True``) recomputes. Not twice differentiable.

    Args:
        input: hidden states :math:`h`, shape ``(N, D)``, or ``(D,)`` for one
            sample; floating point.
        linear_weight: :math:`\mathbf{W}`, shape ``(V, D)``: one row per class
            (the class axis is the first axis of the weight and the last
            axis of the logits), the dtype and device of ``input``.
        target: class indices :math:`y_n`, shape ``(N,)`` (``()`` for one
            sample), integer dtype, in ``[0, V)`` or equal to
            ``ignore_index``.
        linear_bias: :math:`b`, shape ``(V,)``, or None.
        ignore_index: rows whose target equals it contribute 0 and are left
            out of the mean (their logits never enter the gradient).
        reduction: ``'none'``: the loss of every row, shape ``(N,)`` (0 on
            ignored rows); ``'sum'``; ``'mean'`` (default): the sum divided
            by the number of rows not ignored.
        label_smoothing: :math:`\varepsilon \in [0, 1]`, as in
            ``F.cross_entropy`` (both terms divided by the same count).
        chunk_size: rows per chunk, an int >= 1 (larger than N means one
            chunk). None picks D / 2 rows, or enough for 2**20 logits if
            that is more (``default_chunk_size``): the chunk then takes
            half the memory of the weight's gradient.

    Returns:
        The loss, in ``input``'s dtype. float16 and bfloat16 are computed
        in float32 (on float32 copies of ``input`` and ``linear_weight``);
        the gradients come back in each argument's own dtype.

    Raises:
        ValueError: shapes that do not fit together, different dtypes or
            devices, a class index outside ``[0, V)`` that is not
            ``ignore_index``, ``chunk_size`` < 1, an unknown
            ``reduction``, ``label_smoothing`` outside [0, 1],
            ``'mean'`` with every row ignored or no rows (torch: NaN), and
            a NaN loss (naming the argument that is not finite). With
            ``ce_lib.validation(False)`` the checks that need the values
            (class range, empty mean, NaN) are skipped, so nothing waits
            for the device.

    Examples:
        >>> import torch, torch.nn.functional as F
        >>> from ce_lib import linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 4, generator=g, dtype=torch.float64)
        >>> W = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([0, 3, 9, 2, -100, 5])
        >>> loss = linear_cross_entropy(h, W, y, chunk_size=4)
        >>> want = F.cross_entropy(h @ W.T, y)
        >>> round(loss.item(), 6), round(want.item(), 6)
        (3.521416, 3.521416)

    Derived in chapter 6, ``chapters/06-cross-entropy-at-scale.ipynb``.
    """
    h = _checks.as_float_tensor(input, "input")
    W = _checks.as_float_tensor(linear_weight, "linear_weight")
    target = _checks.as_tensor(target, like=h)
    _checks.check_reduction(reduction)
    _checks.check_scalar_range(label_smoothing, "label_smoothing", 0.0, 1.0)
    _checks.check_integer(ignore_index, "ignore_index")
    if chunk_size is not None and (
        not isinstance(chunk_size, numbers.Integral)
        or isinstance(chunk_size, bool)
        or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be None or an int >= 1; got {chunk_size!r}"
        )
    one_sample = h.dim() == 1
    if one_sample:
        if target.dim() != 0:
            raise ValueError(
                "target must be one class index (shape ()) when input has "
                f"shape (D,); got {tuple(target.shape)}"
            )
        h, target = h[None], target[None]
    if h.dim() != 2:
        raise ValueError(
            f"input must have shape (N, D) or (D,); got {tuple(h.shape)}"
        )
    N, D = h.shape
    if W.dim() != 2 or W.shape[1] != D or W.shape[0] < 1:
        raise ValueError(
            f"linear_weight must have shape (V, D) = (V, {D}) with V >= 1; "
            f"got {tuple(W.shape)}"
        )
    V = W.shape[0]
    _check_same_kind(W, h, "linear_weight")
    b = None
    if linear_bias is not None:
        b = _checks.as_float_tensor(linear_bias, "linear_bias")
        if b.shape != (V,):
            raise ValueError(
                f"linear_bias must have shape (V,) = ({V},); "
                f"got {tuple(b.shape)}"
            )
        _check_same_kind(b, h, "linear_bias")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(
            f"target must hold class indices (an integer dtype); "
            f"got {target.dtype}"
        )
    if target.shape != (N,):
        raise ValueError(
            f"target must have shape (N,) = ({N},); got {tuple(target.shape)}"
        )
    target = target.long()
    kept = target != ignore_index
    safe_target = torch.where(kept, target, 0)
    if _checks.validation_enabled():
        _checks.check_target_in_range(target, kept, V, ignore_index, "target")
        if reduction == "mean" and not bool(kept.any()):
            why = "the batch is empty" if N == 0 else "every target is " \
                "ignore_index"  # fmt: skip
            raise ValueError(f"reduction='mean' has nothing to average: {why}")
    dtype = _checks.compute_dtype(h.dtype)
    rows = default_chunk_size(N, D, V) if chunk_size is None else chunk_size
    rows = max(1, min(int(rows), N))
    precompute = None
    wants = (
        h.requires_grad,
        W.requires_grad,
        b is not None and b.requires_grad,
    )
    if reduction != "none" and torch.is_grad_enabled() and any(wants):
        precompute = wants
    loss = _LinearCrossEntropy.apply(
        h, W, b, safe_target, kept.to(dtype), float(label_smoothing),
        reduction, rows, dtype, precompute,
    )  # fmt: skip
    if _checks.validation_enabled():
        inputs = {"input": h, "linear_weight": W}
        if b is not None:
            inputs["linear_bias"] = b
        _checks.explain_nan(loss, **inputs)
    if one_sample and reduction == "none":
        loss = loss[0]
    return loss.to(h.dtype)


def _check_same_kind(t: Tensor, h: Tensor, name: str) -> None:
    """``t`` has the dtype and device of ``input`` (as torch.nn.functional.
    linear requires: no silent copies of a large weight)."""
    if t.dtype != h.dtype or t.device != h.device:
        raise ValueError(
            f"{name} must have input's dtype and device ({h.dtype}, "
            f"{h.device}); got {t.dtype}, {t.device}"
        )
