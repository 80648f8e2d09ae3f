"""The losses written the way the chapters write them: plain tensor code,
plain autograd.

These functions are what the book shows when it says "this is how ce_lib
computes it". Each reads like its equation, has no fast path and no input
checks, and is differentiable to every order by ordinary autograd. The
public functions of :mod:`ce_lib` are held to these by the tests
(``tests/test_reference.py``): the same values and the same first and
second derivatives, to rounding. Some of them *are* the computation of
the public function, which adds only the checks and the reduction.

Conventions: the class (or bin) axis is the last one; every loss returns
the loss of every sample (``reduction='none'``); bins are at 0, 1, ...,
K-1 unless ``bins`` gives positions. A term whose weight is 0 is 0, even
where its log is :math:`-\\infty` (:math:`0 \\log 0 = 0`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def xlogy(a: Tensor, b: Tensor) -> Tensor:
    """a log b, with 0 log 0 = 0 (and a zero derivative there)."""
    zero_log_zero = (a == 0) & (b == 0)
    return a * torch.log(torch.where(zero_log_zero, 1.0, b))


def xlog1py(a: Tensor, b: Tensor) -> Tensor:
    """a log(1 + b), accurate for tiny b, with 0 log 0 = 0."""
    zero_log_zero = (a == 0) & (b == -1)
    return a * torch.log1p(torch.where(zero_log_zero, 0.0, b))


def xlogy_from_log(a: Tensor, log_b: Tensor) -> Tensor:
    """a log b, given log b, with 0 log 0 = 0: 0 where a = 0 and b = 0."""
    zero_log_zero = (a == 0) & (log_b == -torch.inf)
    return a * torch.where(zero_log_zero, 0.0, log_b)


def binary_cross_entropy(p: Tensor, y: Tensor) -> Tensor:
    """-(y log p + (1 - y) log(1 - p)), with 0 log 0 = 0 (chapter 1)."""
    return -(xlogy(y, p) + xlog1py(1 - y, -p))


def log_sigmoid(z: Tensor) -> Tensor:
    """``log sigma(z) = -log(e^0 + e^{-z})``, a log-sum-exp that never
    overflows, with the right derivatives at every z (z = 0 included)."""
    return -torch.logaddexp(torch.zeros_like(z), -z)


def binary_cross_entropy_with_logits(
    z: Tensor, y: Tensor, pos_weight: Tensor | None = None
) -> Tensor:
    """-(w_+ y log p_1 + (1 - y) log p_0), p_1 = sigma(z), p_0 = sigma(-z).

    Without ``pos_weight`` (w_+ = 1) this is
    ``max(z, 0) - z y + log(1 + exp(-abs(z)))`` (chapter 1).
    """
    w = 1.0 if pos_weight is None else pos_weight
    return -(w * y * log_sigmoid(z) + (1 - y) * log_sigmoid(-z))


def log_softmax(z: Tensor) -> Tensor:
    """log softmax(z) = z - logsumexp(z), largest logit taken out first."""
    m = z.amax(dim=-1, keepdim=True).detach()  # any constant works
    return z - m - torch.log(torch.exp(z - m).sum(dim=-1, keepdim=True))


def cross_entropy(
    z: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """-sum_c a_{n,c} log p_{n,c}, p_n = softmax(z_n) (chapter 2).

    The coefficient a_{n,c} of each log-probability is torch's: for class
    indices y_n, (1 - eps) w_{y_n} on the true class plus eps w_c / C on
    every class; for probabilities y_{n,c}, w_c ((1 - eps) y_{n,c} +
    eps / C). With eps = 0 and no weights: -log p_{n,y_n}, and
    -sum_c y_{n,c} log p_{n,c}.
    """
    C = z.shape[-1]
    ones = torch.ones(C, dtype=z.dtype, device=z.device)
    w = ones if weight is None else weight
    eps = label_smoothing
    if target.is_floating_point():  # class probabilities y_{n,c}
        a = w * ((1 - eps) * target + eps / C)
    else:  # class indices y_n
        c = torch.arange(C, device=z.device)
        is_target = c == target[..., None]  # [c = y_n]
        a = (1 - eps) * w[target][..., None] * is_target + eps / C * w
    return -xlogy_from_log(a, log_softmax(z)).sum(dim=-1)


def left_neighbour(y: Tensor, bins: Tensor) -> Tensor:
    """The index i of the bin pair y_i <= y <= y_{i+1} (chapter 4).

    On an interior bin, y = y_k, it is i = k (the pair to the right); on
    the last bin, the last pair. y is not checked: i is clamped to
    [0, K - 2] (the public functions check y).
    """
    i = torch.searchsorted(bins, y.detach(), right=True) - 1
    return i.clamp(0, len(bins) - 2)  # y on the last bin: the last pair


def two_hot(y: Tensor, bins: Tensor) -> Tensor:
    """Mass (y_{i+1} - y) / (y_{i+1} - y_i) on bin i, the rest on bin i+1.

    For y_i <= y <= y_{i+1}; the masses sum to 1 and average to y
    (chapter 4).
    """
    i = left_neighbour(y, bins)
    width = bins[i + 1] - bins[i]
    k = torch.arange(len(bins), device=y.device)
    on_left = (k == i[..., None]) * ((bins[i + 1] - y) / width)[..., None]
    on_right = (k == i[..., None] + 1) * ((y - bins[i]) / width)[..., None]
    return on_left + on_right


def distribution_focal_loss(
    z: Tensor, y: Tensor, bins: Tensor | None = None
) -> Tensor:
    """-((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1}), S = softmax(z).

    For y_i <= y <= y_{i+1} (chapter 4).
    """
    if bins is None:
        K = z.shape[-1]
        bins = torch.arange(K, dtype=z.dtype, device=z.device)
    i = left_neighbour(y, bins)
    log_S = log_softmax(z)
    log_S_i = log_S.gather(-1, i[..., None]).squeeze(-1)
    log_S_next = log_S.gather(-1, (i + 1)[..., None]).squeeze(-1)
    return -(
        xlogy_from_log(bins[i + 1] - y, log_S_i)
        + xlogy_from_log(y - bins[i], log_S_next)
    )


def integral(z: Tensor, bins: Tensor) -> Tensor:
    """GFL's Integral, the expectation of the bins: sum_k S_k y_k
    (chapter 4)."""
    return torch.softmax(z, dim=-1) @ bins
