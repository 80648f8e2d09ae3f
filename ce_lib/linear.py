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

#: The default chunk holds at least this many logits (16 MiB in float32), so
#: that each step of the loop is a large piece of work: every chunk makes one
#: pass over the V x D gradient of the weight, and on a CPU chunks of a few
#: dozen rows make those passes dominate.
MIN_CHUNK_ELEMENTS = 2**22


def default_chunk_size(N: int, D: int, V: int) -> int:
    """Rows per chunk when ``chunk_size`` is None: N D / V rounded up, or
    more if that makes fewer than ``MIN_CHUNK_ELEMENTS`` logits; at least
    1, at most N.

    Why N D / V: a chunk of B rows holds B V logits, so this chunk holds
    about as many logits as the hidden states ``input`` hold numbers (the
    rule of Liger Kernel and of PyTorch's chunked path), small against the
    V x D gradient of the weight that training holds anyway.
    """
    rows = max(-(-N * D // max(V, 1)), -(-MIN_CHUNK_ELEMENTS // max(V, 1)))
    return max(1, min(N, rows))


def _logits_into(
    out: Tensor, h: Tensor, W: Tensor, b: Tensor | None
) -> Tensor:
    """``out = h @ W.T + b`` written into the buffer ``out`` (rows of h)."""
    if b is None:
        return torch.mm(h, W.t(), out=out)
    return torch.addmm(b, h, W.t(), out=out)


def _into_grad_(
    e: Tensor, target: Tensor, scale: Tensor, eps: float, s: Tensor
) -> Tensor:
    """Turn e^{z - m} of a chunk into dloss/dz, in place, where ``s`` is
    its row sum (so p = e / s).

    dloss/dz_{n,c} = a_n (p_{n,c} - (1 - eps) [c = y_n] - eps / V), where
    a_n = ``scale[n]`` (0 on ignored rows).
    """
    p = e.mul_((scale / s)[:, None])
    p.scatter_add_(1, target[:, None], (-(1 - eps) * scale)[:, None])
    if eps > 0:
        p.sub_((eps / p.shape[1]) * scale[:, None])
    return p


def _chunk_gradients(
    G: Tensor,
    G_low: Tensor,
    h: Tensor,
    W: Tensor,
    grads: list[Tensor | None],
    start: int,
    stop: int,
) -> None:
    """Add one chunk's share to the gradients, from G = dloss/dz (rows
    start:stop), and G_low, the same rows in the dtype of h and W.

    dloss/dh = G W (rows start:stop only), dloss/dW += G^T h,
    dloss/db += sum_n G (from G, in the compute dtype).
    """
    grad_h, grad_W, grad_b = grads
    if grad_h is not None:
        torch.mm(G_low, W, out=grad_h[start:stop])
    if grad_W is not None:
        grad_W.addmm_(G_low.t(), h[start:stop])
    if grad_b is not None:
        grad_b.add_(G.sum(dim=0))


def _empty_grads(
    needs: tuple[bool, bool, bool],
    h: Tensor,
    W: Tensor,
    has_bias: bool,
    dtype: torch.dtype,
) -> list[Tensor | None]:
    """Gradient buffers: of h and W in their own dtype (as large as they
    are), of the bias (V numbers) in the compute dtype ``dtype``."""
    V, D = W.shape
    return [
        torch.empty_like(h) if needs[0] else None,
        torch.zeros_like(W) if needs[1] else None,
        W.new_zeros(V, dtype=dtype) if needs[2] and has_bias else None,
    ]


def _chunk_buffers(
    h: Tensor, rows: int, V: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The one chunk of logits, in the compute dtype ``dtype``, and, when
    h is in a lower precision, a chunk in h's dtype for the products
    (else the same buffer)."""
    rows = min(rows, h.shape[0])
    buffer = h.new_empty(rows, V, dtype=dtype)
    low = buffer if h.dtype == dtype else h.new_empty(rows, V)
    return buffer, low


def _logits_of_chunk(
    buffer: Tensor, low: Tensor, h: Tensor, W: Tensor, b: Tensor | None
) -> Tensor:
    """A chunk's logits h W^T + b, computed in h's dtype (into ``low``) and
    returned in the compute dtype of ``buffer``."""
    z = _logits_into(low[: h.shape[0]], h, W, b)
    if low is buffer:
        return z
    return buffer[: h.shape[0]].copy_(z)


def _recompute_gradients(
    ctx: Any, row_grad: Tensor, needs: tuple[bool, bool, bool]
) -> list[Tensor | None]:
    """Gradients by recomputing each chunk of logits from the saved inputs.

    ``row_grad[n]`` is d(output)/d(loss of row n) times the upstream
    gradient: for 'none' the upstream vector itself, for 'mean' and 'sum'
    the upstream scalar times the reduction's factor.
    """
    h, W, b, target, kept, lse = ctx.saved_tensors
    dtype = lse.dtype
    scale = row_grad.to(dtype) * kept
    grads = _empty_grads(needs, h, W, b is not None, dtype)
    rows, (N, V) = ctx.rows, (h.shape[0], W.shape[0])
    buffer, low = _chunk_buffers(h, rows, V, dtype)
    ones = buffer.new_ones(min(rows, N))
    for start in range(0, N, rows):
        stop = min(start + rows, N)
        z = _logits_of_chunk(buffer, low, h[start:stop], W, b)
        p = z.sub_(lse[start:stop, None]).exp_()  # softmax, from the lse
        G = _into_grad_(
            p, target[start:stop], scale[start:stop], ctx.eps,
            ones[: stop - start],
        )  # fmt: skip
        G_low = G if low is buffer else low[: stop - start].copy_(G)
        _chunk_gradients(G, G_low, h, W, grads, start, stop)
    return grads


class _LinearCrossEntropy(torch.autograd.Function):
    """The chunked loop, with gradients precomputed in forward for 'mean'
    and 'sum' (the upstream gradient is one number, applied in backward)
    and recomputed chunk by chunk in backward for 'none'."""

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        W: Tensor,
        b: Tensor | None,
        target: Tensor,
        kept: Tensor,
        eps: float,
        reduction: str,
        rows: int,
        dtype: torch.dtype,
        precompute: tuple[bool, bool, bool] | None,
    ) -> Tensor:
        N, V = h.shape[0], W.shape[0]
        count = kept.sum()
        # a_n: how much row n's loss counts in the result
        scale = kept / count if reduction == "mean" else kept
        loss = h.new_empty(N, dtype=dtype)
        lse = h.new_empty(N, dtype=dtype)
        grads = None
        if precompute is not None:
            grads = _empty_grads(precompute, h, W, b is not None, dtype)
        # the one chunk of logits (and its copy in h's dtype, if lower)
        buffer, low = _chunk_buffers(h, rows, V, dtype)
        for start in range(0, N, rows):
            stop = min(start + rows, N)
            z = _logits_of_chunk(buffer, low, h[start:stop], W, b)
            # CE_n = lse_n - (1 - eps) z_{n,y_n} - (eps / V) sum_c z_{n,c}
            z_y = z.gather(1, target[start:stop, None]).squeeze(1)
            loss_rows = -(1 - eps) * z_y
            if eps > 0:
                loss_rows -= (eps / V) * z.sum(dim=1)
            m = z.amax(dim=1)
            e = z.sub_(m[:, None]).exp_()  # e^{z - m}, in place
            s = e.sum(dim=1)
            lse[start:stop] = m + torch.log(s)
            loss[start:stop] = loss_rows + lse[start:stop]
            if grads is not None:
                G = _into_grad_(e, target[start:stop], scale[start:stop],
                                eps, s)  # fmt: skip
                G_low = G if low is buffer else low[: stop - start].copy_(G)
                _chunk_gradients(G, G_low, h, W, grads, start, stop)
        loss = torch.where(kept.bool(), loss, 0.0)
        ctx.save_for_backward(h, W, b, target, kept, lse)
        ctx.eps, ctx.rows, ctx.reduction = eps, rows, reduction
        ctx.precomputed = grads
        return _checks.reduce_loss(loss, reduction, count)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        needs = tuple(ctx.needs_input_grad[:3])
        h, W, b = ctx.saved_tensors[:3]
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
            for g, need, x in zip(grads, needs, (h, W, b))
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
            chunk). None picks N D / V rows, or enough for 2**22 logits
            if that is more (``default_chunk_size``): the chunk then holds
            about as many logits as ``input`` holds numbers.

    Returns:
        The loss, in ``input``'s dtype. With float16 and bfloat16 the
        three matrix products run in that dtype (no copy of ``input`` or
        ``linear_weight`` is made, and their gradients are accumulated in
        it, as PyTorch's chunked path does with its ``"compact"`` policy,
        its CUDA default); each chunk of logits is then taken to float32,
        where the log-sum-exp, the loss and the chunk's gradient are
        computed, and the bias gradient summed. The weights' gradient is
        so rounded once per chunk, and its error grows with the number of
        chunks (at N = 4096, D = 64, V = 2048, relative to float64: 0.35 %
        with 8 chunks, 1.0 % with 64, against 0.18 % for the plain
        bfloat16 step); larger chunks keep it smaller.

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
        _checks.check_rows_kept(kept, reduction)
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
