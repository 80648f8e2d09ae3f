"""Entropy and KL divergence (chapter 3): the formula, torch, and
H(p, q) = H(p) + KL(p || q)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ce_lib import cross_entropy, entropy, kl_divergence
from conftest import DEVICES


def entropy_reference(p: torch.Tensor) -> torch.Tensor:
    """-sum_c p_c log p_c over the last axis, 0 log 0 = 0, one distribution
    at a time."""
    rows = p.double().reshape(-1, p.shape[-1]).tolist()
    return torch.tensor(
        [-sum(x * math.log(x) for x in row if x > 0) for row in rows],
        dtype=torch.float64,
    ).reshape(p.shape[:-1])


def kl_reference(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_c p_c log(p_c / q_c) over the last axis, 0 log(0/q) = 0."""
    rows = zip(
        p.double().reshape(-1, p.shape[-1]).tolist(),
        q.double().reshape(-1, q.shape[-1]).tolist(),
    )
    return torch.tensor(
        [
            sum(a * math.log(a / b) for a, b in zip(r, s) if a > 0)
            for r, s in rows
        ],
        dtype=torch.float64,
    ).reshape(p.shape[:-1])


@st.composite
def distributions(draw, with_zeros=True):
    batch = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    C = draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    p = torch.rand(*batch, C, generator=g, dtype=torch.float64) ** 3
    if with_zeros and draw(st.booleans()):
        p = p * (torch.rand(*batch, C, generator=g, dtype=torch.float64) > 0.4)
    p[..., 0] += 1e-3  # never an all-zero row
    return (p / p.sum(-1, keepdim=True)).to(dtype), g


@given(data=distributions())
def test_entropy_matches_the_formula_and_torch(data):
    p, _ = data
    ours = entropy(p)
    assert ours.dtype == p.dtype and ours.shape == p.shape[:-1]
    tol = (
        dict(rtol=1e-6, atol=1e-6)
        if p.dtype == torch.float32
        else dict(rtol=1e-12, atol=1e-12)
    )
    torch.testing.assert_close(ours.double(), entropy_reference(p), **tol)
    torch.testing.assert_close(
        ours, torch.distributions.Categorical(probs=p).entropy(), **tol
    )


@given(data=distributions())
def test_kl_divergence_matches_the_formula_and_torch_kl_div(data):
    p, g = data
    q = torch.softmax(torch.randn(p.shape, generator=g, dtype=p.dtype), dim=-1)
    ours = kl_divergence(p, q)
    tol = (
        dict(rtol=1e-5, atol=1e-6)
        if p.dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-12)
    )
    torch.testing.assert_close(ours.double(), kl_reference(p, q), **tol)
    torch.testing.assert_close(
        ours, F.kl_div(q.log(), p, reduction="none").sum(-1), **tol
    )
    assert (ours >= -1e-6).all()


@given(data=distributions(with_zeros=False))
def test_cross_entropy_is_entropy_plus_kl_divergence(data):
    p, g = data
    p = p.reshape(-1, p.shape[-1]).double()
    z = torch.randn(p.shape, generator=g, dtype=torch.float64)
    q = torch.softmax(z, dim=-1)
    torch.testing.assert_close(
        cross_entropy(z, p, reduction="none"),
        entropy(p) + kl_divergence(p, q),
        rtol=1e-10,
        atol=1e-12,
    )


def test_entropy_of_a_one_hot_distribution_is_zero_and_uniform_is_log_C():
    assert entropy([0.0, 1.0, 0.0]).item() == 0.0
    assert not torch.signbit(entropy([0.0, 1.0, 0.0]))
    assert entropy(
        torch.full((7,), 1 / 7, dtype=torch.float64)
    ).item() == pytest.approx(math.log(7), rel=1e-14)


def test_kl_divergence_is_zero_for_equal_ones_and_inf_where_q_misses_mass():
    p = torch.tensor([0.0, 0.25, 0.75], dtype=torch.float64)
    assert kl_divergence(p, p).item() == 0.0
    assert kl_divergence(p, [0.5, 0.5, 0.0]).item() == math.inf
    assert math.isfinite(
        kl_divergence(p, [0.5, 0.25, 0.25]).item()
    )  # q may put mass where p has none


def test_dim_chooses_the_axis_of_the_classes():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(
        torch.randn(3, 4, generator=g, dtype=torch.float64), dim=0
    )
    q = torch.softmax(
        torch.randn(3, 4, generator=g, dtype=torch.float64), dim=0
    )
    torch.testing.assert_close(entropy(p, dim=0), entropy(p.T))
    torch.testing.assert_close(
        kl_divergence(p, q, dim=0), kl_divergence(p.T, q.T)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_close_to_float64(dtype):
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(5, 8, generator=g), -1).to(dtype)
    q = torch.softmax(torch.randn(5, 8, generator=g), -1).to(dtype)
    assert entropy(p).dtype == dtype and kl_divergence(p, q).dtype == dtype
    torch.testing.assert_close(
        entropy(p).double(), entropy_reference(p), rtol=1e-2, atol=1e-2
    )
    torch.testing.assert_close(
        kl_divergence(p, q).double(), kl_reference(p, q), rtol=2e-2, atol=1e-2
    )


@pytest.mark.parametrize("device", DEVICES)
def test_information_functions_run_on_the_device_of_their_inputs(device):
    p = torch.tensor([0.0, 0.5, 0.5], device=device)
    q = torch.tensor([0.2, 0.3, 0.5], device=device)
    assert (
        entropy(p).device.type == device
        and kl_divergence(p, q).device.type == device
    )
    assert entropy(p).item() == pytest.approx(math.log(2), rel=1e-6)
