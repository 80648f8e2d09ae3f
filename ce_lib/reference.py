"""The losses written the way the chapters write them: plain tensor code, plain autograd.

These functions are what the book shows when it says "this is how ce_lib computes it". Each
reads like its equation, has no fast path and no input checks, and is differentiable to every
order by ordinary autograd. The public functions of :mod:`ce_lib` are held to these by the
tests (``tests/test_reference.py``): the same values and the same gradients, to rounding.

Conventions: the class (or bin) axis is the last one; every function returns the loss of every
sample (``reduction='none'``); bins are at 0, 1, ..., K-1 unless ``bins`` gives positions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def binary_cross_entropy(p: Tensor, y: Tensor) -> Tensor:
    """-(y log p + (1 - y) log(1 - p)), with 0 log 0 = 0 (chapter 1)."""
    return -(torch.xlogy(y, p) + torch.xlogy(1 - y, 1 - p))


def binary_cross_entropy_with_logits(z: Tensor, y: Tensor) -> Tensor:
    """max(z, 0) - z y + log(1 + e^{-|z|}): the loss of p1 = sigmoid(z), stably (chapter 1)."""
    return torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-torch.abs(z)))


def log_softmax(z: Tensor) -> Tensor:
    """log softmax(z) = z - logsumexp(z), with the largest logit taken out first (chapter 2)."""
    m = z.amax(dim=-1, keepdim=True).detach()  # any constant works; the max keeps exp <= 1
    return z - m - torch.log(torch.exp(z - m).sum(dim=-1, keepdim=True))


def cross_entropy(z: Tensor, target: Tensor) -> Tensor:
    """-log p_{n, y_n} for class indices, or -sum_c y_{n,c} log p_{n,c} for probabilities (chapter 2)."""
    log_p = log_softmax(z)
    if target.is_floating_point():
        return -(target * log_p).sum(dim=-1)
    return -log_p.gather(-1, target[..., None]).squeeze(-1)


def two_hot(y: Tensor, bins: Tensor) -> Tensor:
    """Mass (y_{i+1} - y)/width on bin i and (y - y_i)/width on bin i+1, for y_i <= y <= y_{i+1} (chapter 4)."""
    i = (torch.searchsorted(bins, y.detach(), right=True) - 1).clamp(0, len(bins) - 2)
    width = bins[i + 1] - bins[i]
    t = torch.zeros(*y.shape, len(bins), dtype=y.dtype, device=y.device)
    t.scatter_(-1, i[..., None], ((bins[i + 1] - y) / width)[..., None])
    t.scatter_(-1, i[..., None] + 1, ((y - bins[i]) / width)[..., None])
    return t


def distribution_focal_loss(z: Tensor, y: Tensor, bins: Tensor | None = None) -> Tensor:
    """-((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1}), for y_i <= y <= y_{i+1} (chapter 4)."""
    if bins is None:
        bins = torch.arange(z.shape[-1], dtype=z.dtype, device=z.device)
    i = (torch.searchsorted(bins, y.detach(), right=True) - 1).clamp(0, len(bins) - 2)
    log_S = log_softmax(z)
    log_S_i = log_S.gather(-1, i[..., None]).squeeze(-1)
    log_S_next = log_S.gather(-1, (i + 1)[..., None]).squeeze(-1)
    return -((bins[i + 1] - y) * log_S_i + (y - bins[i]) * log_S_next)


def integral(z: Tensor, bins: Tensor) -> Tensor:
    """GFL's Integral, the expectation of the bins: sum_k S_k y_k (chapter 4)."""
    return torch.softmax(z, dim=-1) @ bins
