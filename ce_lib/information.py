"""Entropy and Kullback-Leibler divergence of discrete distributions
(chapter 3, ``chapters/03-what-cross-entropy-does.ipynb``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ce_lib import _checks
from ce_lib._checks import TensorLike


def entropy(p: TensorLike, dim: int = -1) -> Tensor:
    r"""Entropy of the distributions along ``dim``, in nats.

    .. math::
        H(p) = -\sum_c p_c \log p_c, \qquad 0 \log 0 = 0
        \text{ (computed with torch.xlogy)}

    Args:
        p: probabilities, any shape, entries in [0, 1]; each slice along
            ``dim`` is one distribution (not checked to sum to 1).
        dim: the axis that holds the classes (default: the last).

    Returns:
        ``H``, the shape of ``p`` without ``dim``, in ``p``'s floating dtype
        (float16 and bfloat16 are computed in float32).

    A one-hot slice gives exactly 0. The derivative with respect to an
    entry equal to 0 is :math:`-\infty` in theory; autograd gives NaN
    there.

    Validation (while :class:`ce_lib.validation` is on, the default):
    entries outside [0, 1] or NaN raise :class:`ValueError` (one
    reduction, one host sync).

    Used in chapter 3 (``chapters/03-what-cross-entropy-does``).

    Examples:
        >>> from ce_lib import entropy
        >>> round(entropy([0.5, 0.25, 0.25]).item(), 6)  # 1.5 log 2
        1.039721
        >>> entropy([0.0, 1.0, 0.0]).item()
        0.0
    """
    p = _checks.as_float_tensor(p, "p")
    if _checks.validation_enabled():
        _checks.check_range(p, "p", 0.0, 1.0)
    q = p.to(_checks.compute_dtype(p.dtype))
    H = 0.0 - torch.xlogy(q, q).sum(dim=dim)  # 0.0 - : one-hot gives +0.0
    return H.to(p.dtype)


def kl_divergence(p: TensorLike, q: TensorLike, dim: int = -1) -> Tensor:
    r"""Kullback-Leibler divergence of ``q`` from ``p`` along ``dim``, in
    nats.

    .. math::
        D_{\mathrm{KL}}(p \,\Vert\, q) = \sum_c p_c \log \frac{p_c}{q_c}
        = \sum_c \bigl(p_c \log p_c - p_c \log q_c\bigr)

    with :math:`0 \log 0 = 0` and :math:`0 \log(0 / q) = 0`
    (``torch.xlogy``), so that :math:`H(p, q) = H(p) + D_{\mathrm{KL}}(p
    \Vert q)`. Note the argument order: the target ``p`` first, as in the
    book; torch's ``kl_div(log q, p)`` takes them the other way
    round.

    Args:
        p: the target distribution, entries in [0, 1], any shape
            broadcastable with ``q``.
        q: the model distribution, entries in [0, 1].
        dim: the axis that holds the classes (default: the last).

    Returns:
        :math:`D_{\mathrm{KL}} \ge 0`, the broadcast shape without ``dim``,
        in ``p``'s floating dtype (float16 and bfloat16 are computed in
        float32).

    0 when ``p = q``; ``+inf`` where :math:`q_c = 0 < p_c`.

    Validation (while :class:`ce_lib.validation` is on, the default):
    entries outside [0, 1] or NaN raise :class:`ValueError` (two
    reductions, two host syncs). Shapes that do not broadcast always
    raise.

    Used in chapter 3 (``chapters/03-what-cross-entropy-does``).

    Examples:
        >>> from ce_lib import kl_divergence
        >>> round(kl_divergence([0.5, 0.5], [0.9, 0.1]).item(), 6)
        0.510826
        >>> kl_divergence([0.0, 1.0], [0.5, 0.0]).item()  # q misses p's mass
        inf
    """
    p = _checks.as_float_tensor(p, "p")
    q = _checks.as_float_tensor(q, "q", like=p)
    if _checks.broadcast_shape(tuple(p.shape), tuple(q.shape)) is None:
        raise ValueError(
            "p and q must have broadcastable shapes; got "
            f"{tuple(p.shape)} and {tuple(q.shape)}"
        )
    if _checks.validation_enabled():
        _checks.check_range(p, "p", 0.0, 1.0)
        _checks.check_range(q, "q", 0.0, 1.0)
    dtype = _checks.compute_dtype(p.dtype)
    p_, q_ = p.to(dtype), q.to(dtype)
    return (torch.xlogy(p_, p_) - torch.xlogy(p_, q_)).sum(dim=dim).to(p.dtype)
