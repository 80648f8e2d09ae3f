"""Vocabulary-parallel cross-entropy over ``torch.distributed`` (chapter 6,
``chapters/06-cross-entropy-at-scale.ipynb``)."""

from __future__ import annotations

import struct
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from ce_lib import _checks
from ce_lib._checks import TensorLike

#: dtypes the ranks may hold their logits in (their index is sent when the
#: ranks check that they agree).
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward: two all-reduces per call (the max, then the sums). Backward:
    the softmax of this rank's slice minus its share of the target, from
    the saved log-sum-exp; no communication."""

    @staticmethod
    def forward(
        ctx: Any,
        z0: Tensor,
        target: Tensor,
        kept: Tensor,
        eps: float,
        reduction: str,
        V: int,
        start: int,
        group: Any,
        dtype: torch.dtype,
    ) -> Tensor:
        z = z0.to(dtype)
        width = z.shape[1]
        # 1. the largest logit of each row, over every rank's slice
        m = z.amax(dim=1)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        # 2. the per-row sums, each rank adding its slice's share:
        #    sum_c e^{z_c - m}; z_{y_n} (only its owner has it); sum_c z_c
        local = target - start
        mine = kept & (local >= 0) & (local < width)
        local = torch.where(mine, local, 0)
        z_y = torch.where(mine, z.gather(1, local[:, None]).squeeze(1), 0.0)
        parts = [torch.exp(z - m[:, None]).sum(dim=1), z_y]
        if eps > 0:
            parts.append(z.sum(dim=1))
        sums = torch.stack(parts)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        lse = m + torch.log(sums[0])
        # CE_n = lse_n - (1 - eps) z_{n,y_n} - (eps / V) sum_c z_{n,c}
        loss = lse - (1 - eps) * sums[1]
        if eps > 0:
            loss = loss - (eps / V) * sums[2]
        loss = torch.where(kept, loss, 0.0)
        count = kept.sum()
        ctx.save_for_backward(z0, local, mine, kept, lse, count)
        ctx.eps, ctx.V, ctx.reduction, ctx.dtype = eps, V, reduction, dtype
        return _checks.reduce_loss(loss, reduction, count)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z0, local, mine, kept, lse, count = ctx.saved_tensors
        eps = ctx.eps
        if ctx.reduction == "mean":
            grad = grad / count
        # a_n: the upstream gradient of row n's loss (0 on ignored rows)
        a = torch.where(kept, grad.to(ctx.dtype).expand(kept.shape), 0.0)
        # dCE/dz_{n,c} = a_n (p_{n,c} - (1 - eps) [c = y_n] - eps / V)
        G = torch.exp(z0.to(ctx.dtype) - lse[:, None]).mul_(a[:, None])
        hit = torch.where(mine, -(1 - eps) * a, 0.0)
        G.scatter_add_(1, local[:, None], hit[:, None])
        if eps > 0:
            G.sub_((eps / ctx.V) * a[:, None])
        return (G.to(z0.dtype), None, None, None, None, None, None, None, None)


def vocab_parallel_cross_entropy(
    local_logits: TensorLike,
    target: TensorLike,
    *,
    group: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Cross-entropy over a vocabulary split across the ranks of a process
    group: each rank holds a contiguous slice of the classes, and the loss
    is that of the full logits, on every rank.

    With R ranks and V classes, rank r holds the logits of classes
    :math:`[rV/R, (r+1)V/R)`, in group order. Per row :math:`n`, the ranks
    all-reduce four quantities: the largest logit :math:`m_n` (MAX), then
    (SUM, in one call) :math:`\sum_c e^{z_{n,c} - m_n}`, the target's logit
    :math:`z_{n,y_n}` (each rank adds it if it holds it, 0 otherwise) and,
    for label smoothing, :math:`\sum_c z_{n,c}`. Then, on every rank,

    .. math::
        \mathrm{CE}_n = m_n + \log \sum_c e^{z_{n,c} - m_n}
            - (1 - \varepsilon)\, z_{n, y_n}
            - \frac{\varepsilon}{V} \sum_c z_{n,c}.

    The gradient of the slice needs nothing from the other ranks: with
    :math:`\log Z_n` saved from forward, :math:`\partial \mathrm{CE}_n /
    \partial z_{n,c} = p_{n,c} - (1-\varepsilon)[c = y_n] - \varepsilon/V`
    with :math:`p_{n,c} = e^{z_{n,c} - \log Z_n}`, so backward makes no
    collective call. Forward moves 4 numbers per row (3 without
    smoothing), against V (R - 1) / R per row to gather the logits.

    Args:
        local_logits: this rank's slice, shape ``(N, V/R)``, floating
            point; the class axis is the last. Every rank must hold the
            same width, N, dtype and options.
        target: global class indices, shape ``(N,)``, integer dtype, in
            ``[0, V)`` or equal to ``ignore_index``, the same on every rank.
        group: the process group (default: the default group); any
            backend whose all_reduce supports MAX and SUM on the logits'
            device (gloo on CPU, NCCL on GPU).
        ignore_index: rows whose target equals it contribute 0 and are left
            out of the mean.
        reduction: ``'none'`` (the loss of every row, shape ``(N,)``, 0 on
            ignored rows), ``'sum'``, or ``'mean'`` (default: over the rows
            not ignored).
        label_smoothing: :math:`\varepsilon \in [0, 1]`, as in
            ``F.cross_entropy``.

    Returns:
        The loss, the same on every rank, in ``local_logits``' dtype
        (float16 and bfloat16 are computed in float32). Backward gives
        each rank the gradient of its own slice.

    Raises:
        ValueError: on every rank together (so that none waits forever)
            when any rank's input is wrong: a shape that is not ``(N, W)``
            and ``(N,)``, ranks whose slices disagree in width, N, dtype or
            options, targets that differ between ranks, a class index
            outside ``[0, V)`` that is not ``ignore_index``, ``'mean'``
            with every row ignored, and a NaN loss (non-finite logits).
            These checks cost two small all-reduces;
            ``ce_lib.validation(False)`` skips them (and every host
            sync). Also when ``torch.distributed`` is not initialised or
            this process is not in ``group``.

    Examples:
        A group of one process (gloo), where the slice is the whole
        vocabulary:

        >>> import torch, torch.distributed as dist, torch.nn.functional as F
        >>> from ce_lib import vocab_parallel_cross_entropy
        >>> dist.init_process_group(
        ...     "gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
        >>> y = torch.tensor([0, 2])
        >>> loss = vocab_parallel_cross_entropy(z, y)
        >>> round(loss.item(), 4), round(F.cross_entropy(z, y).item(), 4)
        (1.2056, 1.2056)
        >>> dist.destroy_process_group()

        ``ce_lib.scale.run_local_group`` starts several processes on
        one machine to try it.

    Derived in chapter 6, ``chapters/06-cross-entropy-at-scale.ipynb``.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "group: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("group: this process is not a member of the group")
    R = dist.get_world_size(group)
    z, problem = local_logits, None
    try:  # find what is wrong here before anything waits for the others
        z = _checks.as_float_tensor(local_logits, "local_logits")
        target = _checks.as_tensor(target, like=z)
        _checks.check_reduction(reduction)
        _checks.check_scalar_range(label_smoothing, "label_smoothing", 0, 1)
        _checks.check_integer(ignore_index, "ignore_index")
        problem = _local_problem(z, target)
    except ValueError as error:
        problem = str(error)
    if _checks.validation_enabled():
        _check_ranks_agree(
            z, target, problem, group, ignore_index, reduction, label_smoothing
        )
    elif problem:
        raise ValueError(problem)
    N, width = z.shape
    V = width * R
    target = target.long()
    kept = target != ignore_index
    if _checks.validation_enabled():  # the same on every rank by now
        _checks.check_target_in_range(target, kept, V, ignore_index, "target")
        _checks.check_rows_kept(kept, reduction)
    dtype = _checks.compute_dtype(z.dtype)
    loss = _VocabParallelCrossEntropy.apply(
        z, target, kept, float(label_smoothing), reduction, V,
        rank * width, group, dtype,
    )  # fmt: skip
    if _checks.validation_enabled():  # the loss is the same on every rank
        if loss.numel() and bool(torch.isnan(loss.detach()).any()):
            here = "are" if bool(torch.isfinite(z).all()) else "are not"
            raise ValueError(
                "the loss is NaN: local_logits must be finite (no NaN or "
                f"inf) on every rank; rank {rank}'s {here}"
            )
    return loss.to(z.dtype)


def _local_problem(z: Tensor, target: Tensor) -> str | None:
    """What is wrong with this rank's arguments on their own, if anything."""
    if z.dim() != 2 or z.shape[1] < 1:
        return (
            "local_logits must have shape (N, V/R) with V/R >= 1; got "
            f"{tuple(z.shape)}"
        )
    if z.dtype not in _DTYPES:
        return f"local_logits must be floating point; got {z.dtype}"
    if target.is_floating_point() or target.dtype == torch.bool:
        return f"target must hold class indices; got {target.dtype}"
    if target.shape != (z.shape[0],):
        return (
            f"target must have shape (N,) = ({z.shape[0]},); "
            f"got {tuple(target.shape)}"
        )
    return None


def _as_int(x: float) -> int:
    """The bits of a float64, as an int64, to compare exactly across ranks."""
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _check_ranks_agree(
    z: Tensor,
    target: Tensor,
    problem: str | None,
    group: Any,
    ignore_index: int,
    reduction: str,
    eps: float,
) -> None:
    """Raise the same ValueError on every rank if any rank's input is wrong
    or the ranks disagree. Two all-reduces (MAX of x and of -x gives the
    largest and the smallest value of x over the ranks)."""
    ok = problem is None
    device = z.device if isinstance(z, Tensor) else torch.device("cpu")
    # (what must agree, its value here, whether to show the range)
    facts = [
        ("local_logits must have the same number of rows N on every rank",
         z.shape[0] if ok else 0, True),
        ("local_logits must have the same width V/R on every rank (an equal "
         "slice of the classes each)", z.shape[1] if ok else 0, True),
        ("local_logits must have the same dtype on every rank",
         _DTYPES.index(z.dtype) if ok else 0, False),
        ("reduction must be the same on every rank",
         ("none", "mean", "sum").index(reduction) if ok else 0, False),
        ("ignore_index must be the same on every rank",
         ignore_index if ok else 0, False),
        ("label_smoothing must be the same on every rank",
         _as_int(float(eps)) if ok else 0, False),
    ]  # fmt: skip
    x = torch.tensor([int(not ok)] + [v for _, v, _ in facts], device=device)
    both = torch.cat([x, -x])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    k = x.numel()
    high, low = both[:k].tolist(), (-both[k:]).tolist()
    if not ok:
        raise ValueError(problem)
    if high[0]:
        raise ValueError(
            "another rank of the group got invalid input (its error says "
            "what); every rank must pass local_logits (N, V/R) and target "
            "(N,)"
        )
    for (message, _, show), hi, lo in zip(facts, high[1:], low[1:]):
        if hi != lo:
            if show:
                message += f"; got values from {lo} to {hi}"
            raise ValueError(message)
    t = target.long()
    both = torch.cat([t, -t])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    N = t.shape[0]
    if not bool((both[:N] == -both[N:]).all()):
        raise ValueError(
            "target must be the same on every rank of the group; it differs"
        )
