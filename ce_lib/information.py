"""Entropy and Kullback-Leibler divergence of discrete distributions (chapter 3,
``chapters/03-what-cross-entropy-does.ipynb``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ce_lib import _checks
from ce_lib._checks import TensorLike


def entropy(p: TensorLike, dim: int = -1) -> Tensor:
    r"""Entropy of the distributions along ``dim``, in nats.

    .. math::
        H(p) = -\sum_c p_c \log p_c, \qquad 0 \log 0 = 0 \text{ (computed with torch.xlogy)}

    Args:
        p: probabilities, any shape, entries in [0, 1]; each slice along ``dim`` is one
            distribution (not checked to sum to 1).
        dim: the axis that holds the classes.

    Returns:
        ``H``, the shape of ``p`` without ``dim``, in ``p``'s floating dtype (float16 and
        bfloat16 are computed in float32).

    Edge cases: a one-hot slice gives exactly 0; entries outside [0, 1] or NaN raise
    :class:`ValueError`. The gradient with respect to an entry equal to 0 is not defined
    (autograd gives NaN there). Used in chapter 3, ``chapters/03-what-cross-entropy-does.ipynb``.
    """
    p = _checks.as_float_tensor(p, "p")
    _checks.check_range(p, "p", 0.0, 1.0)
    q = p.to(_checks.compute_dtype(p.dtype))
    return (0.0 - torch.xlogy(q, q).sum(dim=dim)).to(p.dtype)  # 0.0 - : a one-hot p gives 0.0, not -0.0


def kl_divergence(p: TensorLike, q: TensorLike, dim: int = -1) -> Tensor:
    r"""Kullback-Leibler divergence of ``q`` from ``p`` along ``dim``, in nats.

    .. math::
        D_{\mathrm{KL}}(p \,\Vert\, q) = \sum_c p_c \log \frac{p_c}{q_c}
        = \sum_c \bigl(p_c \log p_c - p_c \log q_c\bigr)

    with :math:`0 \log 0 = 0` and :math:`0 \log(0 / q) = 0` (``torch.xlogy``), so that
    :math:`H(p, q) = H(p) + D_{\mathrm{KL}}(p \Vert q)`. Note the argument order: the target
    ``p`` first, as in the book; ``torch.nn.functional.kl_div(log q, p)`` takes them the other
    way round.

    Args:
        p: the target distribution, entries in [0, 1], any shape broadcastable with ``q``.
        q: the model distribution, entries in [0, 1].
        dim: the axis that holds the classes.

    Returns:
        :math:`D_{\mathrm{KL}} \ge 0`, the broadcast shape without ``dim``, in ``p``'s floating
        dtype (float16 and bfloat16 are computed in float32).

    Edge cases: 0 when ``p = q``; ``+inf`` where ``q_c = 0 < p_c``; entries outside [0, 1],
    NaN, or shapes that do not broadcast raise :class:`ValueError`. Used in chapter 3,
    ``chapters/03-what-cross-entropy-does.ipynb``.
    """
    p = _checks.as_float_tensor(p, "p")
    q = _checks.as_float_tensor(q, "q", like=p)
    _checks.check_range(p, "p", 0.0, 1.0)
    _checks.check_range(q, "q", 0.0, 1.0)
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError:
        raise ValueError(f"p and q must have broadcastable shapes; got {tuple(p.shape)} and {tuple(q.shape)}") from None
    dtype = _checks.compute_dtype(p.dtype)
    p_, q_ = p.to(dtype), q.to(dtype)
    return (torch.xlogy(p_, p_) - torch.xlogy(p_, q_)).sum(dim=dim).to(p.dtype)
