"""Binary cross-entropy (chapter 1): against the formula, against torch,
at the edges."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ce_lib import binary_cross_entropy, binary_cross_entropy_with_logits
from conftest import DEVICES

REDUCTIONS = ["none", "mean", "sum"]


# ---- references from the formulas, one element at a time, in float64 ----


def xlogy(a: float, b: float) -> float:
    return 0.0 if a == 0 else a * math.log(b) if b > 0 else -math.inf


def bce_reference(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-(y log p + (1-y) log(1-p)), with 0 log 0 = 0."""
    values = [
        -(xlogy(b, a) + xlogy(1 - b, 1 - a))
        for a, b in zip(
            p.double().flatten().tolist(), y.double().flatten().tolist()
        )
    ]
    return torch.tensor(values, dtype=torch.float64).reshape(p.shape)


def bce_logits_reference(
    z: torch.Tensor, y: torch.Tensor, pos_weight=None
) -> torch.Tensor:
    """-(pw y log sigma(z) + (1-y) log sigma(-z)), with log sigma(z) =
    -log(1 + e^{-z}) done stably."""
    pw = (
        torch.ones_like(z, dtype=torch.float64)
        if pos_weight is None
        else pos_weight.double().expand(z.shape)
    )

    def log_sigmoid(t: float) -> float:
        return (
            -math.log1p(math.exp(-t))
            if t >= 0
            else t - math.log1p(math.exp(t))
        )

    values = [
        -(w * b * log_sigmoid(a) + (1 - b) * log_sigmoid(-a))
        for a, b, w in zip(
            z.double().flatten().tolist(),
            y.double().flatten().tolist(),
            pw.flatten().tolist(),
        )
    ]
    return torch.tensor(values, dtype=torch.float64).reshape(z.shape)


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return (
        loss.mean()
        if reduction == "mean"
        else loss.sum()
        if reduction == "sum"
        else loss
    )


shapes = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)
float_dtypes = st.sampled_from([torch.float32, torch.float64])


def tolerance(dtype):
    return (
        dict(rtol=1e-6, atol=1e-6)
        if dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-12)
    )


# ---- from probabilities ----


@given(
    shape=shapes,
    reduction=st.sampled_from(REDUCTIONS),
    dtype=float_dtypes,
    seed=st.integers(0, 2**16),
    hard=st.booleans(),
)
def test_bce_matches_the_formula_and_torch(
    shape, reduction, dtype, seed, hard
):
    g = torch.Generator().manual_seed(seed)
    p = (
        torch.rand(shape, generator=g, dtype=dtype)
        .clamp(1e-4, 1 - 1e-4)
        .requires_grad_()
    )
    y = (
        torch.randint(0, 2, shape, generator=g).to(dtype)
        if hard
        else torch.rand(shape, generator=g, dtype=dtype)
    )
    ours = binary_cross_entropy(p, y, reduction=reduction)
    assert (
        ours.dtype == dtype
        and ours.shape == reduce(torch.zeros(shape), reduction).shape
    )
    torch.testing.assert_close(
        ours.double(),
        reduce(bce_reference(p, y), reduction),
        **tolerance(dtype),
    )
    theirs = F.binary_cross_entropy(p, y, reduction=reduction)
    torch.testing.assert_close(ours, theirs, **tolerance(dtype))
    upstream = torch.rand(ours.shape, generator=g, dtype=dtype)
    (grad_ours,) = torch.autograd.grad(ours, p, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, p, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-5, atol=1e-6)


def test_bce_is_zero_when_certain_and_right():
    loss = binary_cross_entropy([0.0, 1.0], [0.0, 1.0], reduction="none")
    assert loss.tolist() == [0.0, 0.0]
    assert not torch.signbit(loss).any()  # 0.0, not -0.0


def test_bce_gradient_is_finite_when_certain_and_right():
    p = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    binary_cross_entropy(p, [0.0, 1.0], reduction="sum").backward()
    assert p.grad.tolist() == [
        1.0,
        -1.0,
    ]  # d/dp of -log(1-p) at 0, of -log p at 1


def test_bce_is_inf_when_certain_and_wrong_where_torch_clamps_to_100():
    p, y = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    assert binary_cross_entropy(p, y, reduction="none").tolist() == [
        math.inf,
        math.inf,
    ]
    assert F.binary_cross_entropy(p, y, reduction="none").tolist() == [
        100.0,
        100.0,
    ]


@pytest.mark.parametrize(
    "y, minimum", [(0.2, 0.50040), (0.7, 0.61086), (0.5, math.log(2))]
)
def test_soft_label_bce_is_minimised_at_p_equal_y_with_value_the_entropy_of_y(
    y, minimum
):
    p = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    losses = binary_cross_entropy(p, torch.full_like(p, y), reduction="none")
    assert p[losses.argmin()].item() == pytest.approx(y, abs=1e-3)
    at_y = binary_cross_entropy(y, y)
    entropy_of_y = -(y * math.log(y) + (1 - y) * math.log(1 - y))
    assert at_y.item() == pytest.approx(entropy_of_y, abs=1e-12)
    assert at_y.item() == pytest.approx(minimum, abs=5e-6)
    p_y = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    binary_cross_entropy(p_y, y).backward()
    assert p_y.grad.item() == pytest.approx(0.0, abs=1e-12)


def test_bce_accepts_lists_numpy_and_python_floats_as_float64():
    assert binary_cross_entropy([0.5, 0.25], [1, 0]).dtype == torch.float64
    assert (
        binary_cross_entropy(
            np.array([0.5], dtype=np.float32), np.array([1.0])
        ).dtype
        == torch.float32
    )
    assert binary_cross_entropy(0.5, 1.0).item() == pytest.approx(
        math.log(2), abs=1e-15
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bce_in_half_precision_is_finite_and_close_to_float64(dtype):
    g = torch.Generator().manual_seed(0)
    p, y = (
        torch.rand(64, generator=g).clamp(0.01, 0.99),
        torch.rand(64, generator=g),
    )
    ours = binary_cross_entropy(p.to(dtype), y.to(dtype), reduction="none")
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    torch.testing.assert_close(
        ours.double(),
        bce_reference(p.to(dtype), y.to(dtype)),
        rtol=1e-2,
        atol=1e-2,
    )


# ---- from logits ----


@given(
    shape=shapes,
    reduction=st.sampled_from(REDUCTIONS),
    dtype=float_dtypes,
    seed=st.integers(0, 2**16),
    use_pos_weight=st.booleans(),
    scale=st.sampled_from([1.0, 10.0, 50.0]),
)
def test_bce_with_logits_matches_the_formula_and_torch(
    shape, reduction, dtype, seed, use_pos_weight, scale
):
    g = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(shape, generator=g, dtype=dtype)).requires_grad_()
    y = torch.rand(shape, generator=g, dtype=dtype)
    pos_weight = (
        3 * torch.rand(shape[-1:], generator=g, dtype=dtype)
        if use_pos_weight
        else None
    )
    ours = binary_cross_entropy_with_logits(
        z, y, reduction=reduction, pos_weight=pos_weight
    )
    assert ours.dtype == dtype
    torch.testing.assert_close(
        ours.double(),
        reduce(bce_logits_reference(z, y, pos_weight), reduction),
        rtol=1e-6 if dtype == torch.float32 else 1e-10,
        atol=1e-5 if dtype == torch.float32 else 1e-10,
    )
    theirs = F.binary_cross_entropy_with_logits(
        z, y, reduction=reduction, pos_weight=pos_weight
    )
    torch.testing.assert_close(
        ours,
        theirs,
        rtol=1e-6 if dtype == torch.float32 else 1e-10,
        atol=1e-5 if dtype == torch.float32 else 1e-10,
    )
    upstream = torch.rand(ours.shape, generator=g, dtype=dtype)
    (grad_ours,) = torch.autograd.grad(ours, z, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, z, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, **tolerance(dtype))


@given(
    n=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    use_pos_weight=st.booleans(),
)
def test_bce_with_logits_gradient_is_sigmoid_minus_y(n, seed, use_pos_weight):
    g = torch.Generator().manual_seed(seed)
    z = (4 * torch.randn(n, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.rand(n, generator=g, dtype=torch.float64)
    pw = (
        1 + torch.rand(n, generator=g, dtype=torch.float64)
        if use_pos_weight
        else torch.ones(n, dtype=torch.float64)
    )
    binary_cross_entropy_with_logits(
        z, y, pos_weight=pw if use_pos_weight else None
    ).backward()
    sigma = 1 / (1 + torch.exp(-z.detach()))
    expected = (
        (1 + (pw - 1) * y) * sigma - pw * y
    ) / n  # sigma(z) - y without pos_weight; / n for the mean
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)


def test_bce_with_logits_gradients_in_z_y_pos_weight_gradcheck_and_torch():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pw = (1 + torch.rand(3, generator=g, dtype=torch.float64)).requires_grad_()
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, b, c, reduction=reduction: (
                binary_cross_entropy_with_logits(
                    a, b, reduction=reduction, pos_weight=c
                )
            ),
            (z, y, pw),
        )
    ours = torch.autograd.grad(
        binary_cross_entropy_with_logits(z, y, pos_weight=pw), (z, y)
    )
    theirs = torch.autograd.grad(
        F.binary_cross_entropy_with_logits(z, y, pos_weight=pw.detach()),
        (z, y),
    )
    for a, b in zip(ours, theirs):  # torch does not differentiate pos_weight
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_bce_gradients_for_p_and_y_pass_gradcheck():
    g = torch.Generator().manual_seed(2)
    p = (
        0.05 + 0.9 * torch.rand(5, generator=g, dtype=torch.float64)
    ).requires_grad_()
    y = torch.rand(5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: binary_cross_entropy(a, b, reduction="none"), (p, y)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_with_logits_is_exact_and_finite_at_logits_of_1e4(dtype):
    z = torch.tensor([1e4, 1e4, -1e4, -1e4], dtype=dtype, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=dtype)
    loss = binary_cross_entropy_with_logits(z, y, reduction="none")
    assert loss.tolist() == [0.0, 1e4, 1e4, 0.0]
    loss.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, -1.0, 0.0]  # sigma(z) - y


def test_bce_with_logits_keeps_tiny_losses_of_confident_right_answers():
    z = torch.tensor([30.0, -30.0], dtype=torch.float32)
    loss = binary_cross_entropy_with_logits(
        z, torch.tensor([1.0, 0.0]), reduction="none"
    )
    torch.testing.assert_close(
        loss, torch.full((2,), math.log1p(math.exp(-30.0))), rtol=1e-6, atol=0
    )


def test_bce_with_logits_equals_bce_of_the_sigmoid():
    z = torch.linspace(-6, 6, 25, dtype=torch.float64)
    y = torch.linspace(0, 1, 25, dtype=torch.float64)
    torch.testing.assert_close(
        binary_cross_entropy_with_logits(z, y, reduction="none"),
        binary_cross_entropy(torch.sigmoid(z), y, reduction="none"),
        rtol=1e-12,
        atol=1e-14,
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bce_with_logits_in_half_precision_is_finite_and_close_to_float64(
    dtype,
):
    g = torch.Generator().manual_seed(0)
    z, y = 8 * torch.randn(64, generator=g), torch.rand(64, generator=g)
    z[:2] = torch.tensor([1e4, -1e4])
    ours = binary_cross_entropy_with_logits(
        z.to(dtype), y.to(dtype), reduction="none"
    )
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    reference = bce_logits_reference(z.to(dtype), y.to(dtype))
    torch.testing.assert_close(ours.double(), reference, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_bce_runs_on_the_device_of_its_inputs(device):
    z = torch.linspace(-3, 3, 7, device=device, requires_grad=True)
    y = torch.linspace(0, 1, 7, device=device)
    loss = binary_cross_entropy_with_logits(z, y) + binary_cross_entropy(
        torch.sigmoid(z), y
    )
    assert loss.device.type == device
    loss.backward()
    assert z.grad.device.type == device
    z_cpu = z.detach().cpu().requires_grad_()
    expected = F.binary_cross_entropy_with_logits(
        z_cpu, y.cpu()
    ) + F.binary_cross_entropy(torch.sigmoid(z_cpu), y.cpu())
    expected.backward()
    torch.testing.assert_close(
        loss.cpu(), expected.detach(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(z.grad.cpu(), z_cpu.grad, rtol=1e-5, atol=1e-6)


# ---- edges found by adversarial testing ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_keeps_relative_accuracy_for_tiny_p(dtype):
    # -log(1 - p) = p + p^2/2 + ...: 1e-9, where log(1 - p) rounds to 0
    p = torch.tensor([1e-9, 1e-30, 0.5], dtype=dtype)
    loss = binary_cross_entropy(
        p, torch.zeros(3, dtype=dtype), reduction="none"
    )
    torch.testing.assert_close(
        loss,
        torch.tensor([1e-9, 1e-30, math.log(2)], dtype=dtype),
        rtol=1e-6,
        atol=0,
    )
    # the other side: -log p for p = 1 - tiny, as accurate as 1 - p itself
    q = torch.tensor([1 - 2**-20], dtype=dtype)
    assert binary_cross_entropy(
        q, torch.ones(1, dtype=dtype)
    ).item() == pytest.approx(2**-20, rel=1e-6)


@pytest.mark.parametrize("y", [0.0, 0.5, 1.0])
def test_p_of_minus_zero_behaves_as_plus_zero(y):
    losses, grads = [], []
    for zero in (0.0, -0.0):
        p = torch.tensor([zero], dtype=torch.float64, requires_grad=True)
        loss = binary_cross_entropy(
            p, torch.tensor([y], dtype=torch.float64), reduction="sum"
        )
        loss.backward()
        losses.append(loss.item())
        grads.append(p.grad.item())
    assert losses[0] == losses[1]
    assert grads[0] == grads[1]  # +-inf or a number, with the same sign
    assert math.copysign(1.0, grads[0]) == math.copysign(1.0, grads[1])


MIRRORED = [
    (math.inf, 0.0),
    (math.inf, 1.0),
    (math.inf, 0.5),
    (-math.inf, 1.0),
    (-math.inf, 0.0),
    (-math.inf, 0.5),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("z, y", MIRRORED)
def test_infinite_logits_raise_on_both_sides(z, y, reduction):
    # (z, y) and (-z, 1 - y) are the same problem: both raise
    for zz, yy in ((z, y), (-z, 1 - y)):
        with pytest.raises(ValueError, match="z must be finite; got inf"):
            binary_cross_entropy_with_logits(
                torch.tensor([0.5, zz]),
                torch.tensor([1.0, yy]),
                reduction=reduction,
            )


def test_bce_with_logits_errors_name_the_input_that_is_nan():
    with pytest.raises(ValueError, match="y must be finite; got NaN"):
        binary_cross_entropy_with_logits(
            torch.tensor([1.0]), torch.tensor([math.nan])
        )
    with pytest.raises(ValueError, match="pos_weight must be finite; got inf"):
        binary_cross_entropy_with_logits(
            torch.tensor([1.0]),
            torch.tensor([1.0]),
            pos_weight=torch.tensor([math.inf]),
        )


def test_bce_with_logits_is_symmetric_under_z_y_to_minus_z_one_minus_y():
    z = torch.linspace(-40, 40, 81, dtype=torch.float64)
    y = torch.linspace(0, 1, 81, dtype=torch.float64)
    torch.testing.assert_close(
        binary_cross_entropy_with_logits(z, y, reduction="none"),
        binary_cross_entropy_with_logits(-z, 1 - y, reduction="none"),
        rtol=1e-13,
        atol=1e-13,
    )


def test_tiny_losses_of_confident_right_answers_survive_pos_weight():
    z, y = torch.tensor([-30.0, 30.0]), torch.tensor([0.0, 1.0])
    loss = binary_cross_entropy_with_logits(
        z, y, reduction="none", pos_weight=torch.tensor([2.0, 2.0])
    )
    tail = math.log1p(math.exp(-30.0))  # -log sigma(30)
    torch.testing.assert_close(
        loss, torch.tensor([tail, 2 * tail]), rtol=1e-6, atol=0
    )
