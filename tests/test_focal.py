"""Sigmoid focal loss (chapter 5): against the formula in float64 and in
high precision, against torchvision's value, BCE at gamma = 0, soft
targets, gradients of every order, half precision and bad input."""

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ce_lib
from ce_lib import binary_cross_entropy_with_logits, sigmoid_focal_loss
from conftest import DEVICES

REDUCTIONS = ["none", "mean", "sum"]
F64 = torch.float64


# ---- references, from the formula, one element at a time ----


def log_sigmoid(t: float) -> float:
    return -math.log1p(math.exp(-t)) if t >= 0 else t - math.log1p(math.exp(t))


def focal_reference(z, y, alpha, gamma):
    """alpha_t (1 - p_t)^gamma BCE, p_t = p y + (1 - p)(1 - y), in float64."""
    values = []
    for a, b in zip(
        z.double().flatten().tolist(), y.double().flatten().tolist()
    ):
        log_p1, log_p0 = log_sigmoid(a), log_sigmoid(-a)
        p1, p0 = math.exp(log_p1), math.exp(log_p0)
        bce = -(b * log_p1 + (1 - b) * log_p0)
        one_minus_pt = b * p0 + (1 - b) * p1
        alpha_t = 1.0 if alpha is None else alpha * b + (1 - alpha) * (1 - b)
        values.append(alpha_t * one_minus_pt**gamma * bce)
    return torch.tensor(values, dtype=F64).reshape(z.shape)


def focal_mp(z: float, y: float, alpha, gamma: float) -> float:
    """The same formula at 50 significant digits (mpmath)."""
    with mpmath.workdps(50):
        z, y = mpmath.mpf(z), mpmath.mpf(y)
        log_p1 = -mpmath.log1p(mpmath.exp(-z))
        log_p0 = -mpmath.log1p(mpmath.exp(z))
        p1, p0 = mpmath.exp(log_p1), mpmath.exp(log_p0)
        bce = -(y * log_p1 + (1 - y) * log_p0)
        alpha_t = 1 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
        return float(alpha_t * (y * p0 + (1 - y) * p1) ** gamma * bce)


def naive_focal(z, y, alpha, gamma):
    """The literal formula with plain autograd (fine for moderate z)."""
    p = torch.sigmoid(z)
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return alpha_t * (1 - p_t) ** gamma * bce


def reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
alphas = st.one_of(st.none(), st.floats(0.0, 1.0))
gammas = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 5.0])


# ---- values ----


@settings(max_examples=20)
@given(
    shape=shapes,
    reduction=st.sampled_from(REDUCTIONS),
    dtype=st.sampled_from([torch.float32, F64]),
    seed=st.integers(0, 2**16),
    hard=st.booleans(),
    alpha=alphas,
    gamma=gammas,
)
def test_focal_loss_matches_the_formula_in_float64(
    shape, reduction, dtype, seed, hard, alpha, gamma
):
    g = torch.Generator().manual_seed(seed)
    z = 5 * torch.randn(shape, generator=g, dtype=dtype)
    if hard:
        y = torch.randint(0, 2, shape, generator=g).to(dtype)
    else:
        y = torch.rand(shape, generator=g, dtype=dtype)
    ours = sigmoid_focal_loss(z, y, alpha, gamma, reduction)
    assert ours.dtype == dtype
    expected = reduce(focal_reference(z, y, alpha, gamma), reduction)
    assert ours.shape == expected.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_focal_loss_gives_torchvisions_value_at_z_0_y_1(device):
    z = torch.zeros(1, device=device)
    loss = sigmoid_focal_loss(z, torch.ones(1, device=device))
    assert loss.item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    assert loss.item() == pytest.approx(0.043322, abs=5e-7)  # torchvision


@pytest.mark.parametrize("soft", [False, True])
def test_focal_loss_with_gamma_0_and_no_alpha_is_bce_with_logits(soft):
    g = torch.Generator().manual_seed(3)
    z = 20 * torch.randn(200, generator=g, dtype=F64)
    if soft:
        y = torch.rand(200, generator=g, dtype=F64)
    else:
        y = torch.randint(0, 2, (200,), generator=g).to(F64)
    for reduction in REDUCTIONS:
        ours = sigmoid_focal_loss(z, y, None, 0.0, reduction)
        torch.testing.assert_close(
            ours,
            binary_cross_entropy_with_logits(z, y, reduction),
            rtol=1e-14,
            atol=1e-14,
        )
        torch.testing.assert_close(
            ours,
            F.binary_cross_entropy_with_logits(z, y, reduction=reduction),
            rtol=1e-14,
            atol=1e-14,
        )


@pytest.mark.parametrize("gamma", [0.0, 0.25, 1.0, 2.0])
@pytest.mark.parametrize("y", [0.0, 1.0, 0.3, 1e-9])
def test_focal_loss_is_accurate_at_extreme_logits(gamma, y):
    """Relative error ~ rounding even where 1 - p_t is tiny (mpmath)."""
    z = torch.tensor([-800.0, -100.0, -30.0, 30.0, 100.0, 800.0], dtype=F64)
    ours = sigmoid_focal_loss(z, torch.full_like(z, y), 0.25, gamma, "none")
    for a, value in zip(z.tolist(), ours.tolist()):
        expected = focal_mp(a, y, 0.25, gamma)
        assert value == pytest.approx(expected, rel=1e-13, abs=1e-300)


def test_focal_loss_with_target_one_half_is_the_bce_times_a_constant():
    """y = 1/2 gives 1 - p_t = (p_0 + p_1)/2 = 1/2 whatever the logit."""
    z = torch.linspace(-30, 30, 61, dtype=F64)
    y = torch.full_like(z, 0.5)
    ours = sigmoid_focal_loss(z, y, 0.25, 2.0, "none")
    bce = binary_cross_entropy_with_logits(z, y, "none")
    torch.testing.assert_close(ours, 0.5 * 0.25 * bce, rtol=1e-14, atol=0)


def test_focal_loss_is_continuous_in_the_target_at_0_and_1():
    z = torch.tensor([-3.0, 0.5, 4.0], dtype=F64)
    for hard, near in [(0.0, 1e-12), (1.0, 1 - 1e-12)]:
        at = sigmoid_focal_loss(z, torch.full_like(z, hard), None, 0.5, "none")
        by = sigmoid_focal_loss(z, torch.full_like(z, near), None, 0.5, "none")
        torch.testing.assert_close(at, by, rtol=1e-9, atol=1e-11)


def test_focal_loss_down_weights_easy_samples_more_than_hard_ones():
    z = torch.tensor([4.0, -1.0], dtype=F64)  # easy and hard positives
    y = torch.ones(2, dtype=F64)
    focal = sigmoid_focal_loss(z, y, None, 2.0, "none")
    bce = binary_cross_entropy_with_logits(z, y, "none")
    ratio = (focal / bce).tolist()  # (1 - p_t)^2
    expected = [torch.sigmoid(-z[i]).item() ** 2 for i in range(2)]
    assert ratio == pytest.approx(expected, rel=1e-14)
    assert ratio[0] < 1e-3
    assert ratio[1] > 0.5


def test_focal_loss_reductions_and_empty_input():
    z = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=F64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    each = sigmoid_focal_loss(z, y, reduction="none")
    assert each.shape == (2, 2)
    assert sigmoid_focal_loss(z, y, reduction="sum").item() == pytest.approx(
        each.sum().item(), rel=1e-15
    )
    assert sigmoid_focal_loss(z, y).item() == pytest.approx(
        each.sum().item() / 4, rel=1e-15
    )
    empty = torch.zeros(0, 3)
    assert sigmoid_focal_loss(empty, empty, reduction="sum").item() == 0.0
    assert sigmoid_focal_loss(empty, empty, reduction="none").shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_focal_loss_in_half_precision_is_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(4)
    z = (6 * torch.randn(64, generator=g)).to(dtype)
    y = torch.rand(64, generator=g).to(dtype)
    ours = sigmoid_focal_loss(z, y, reduction="none")
    assert ours.dtype == dtype
    in_float32 = sigmoid_focal_loss(z.float(), y.float(), reduction="none")
    assert torch.equal(ours, in_float32.to(dtype))


def test_focal_loss_accepts_lists_and_python_numbers():
    loss = sigmoid_focal_loss([0.0, 1.0], [1, 0])
    assert loss.dtype == F64
    assert sigmoid_focal_loss(0.0, 1.0).item() == pytest.approx(
        0.25 * 0.25 * math.log(2), rel=1e-15
    )


# ---- gradients ----


def closed_form_gradient(z, y):
    """Lin et al.'s derivative, alpha = None, hard labels:
    dFL/dz = s (1 - p_t)^g (g p_t log p_t + p_t - 1), s = +1 for y = 1
    and -1 for y = 0, with p_t = sigmoid(s z)."""

    def grad(gamma):
        s = 2 * y - 1
        log_pt = F.logsigmoid(s * z)
        p_t, one_minus = torch.sigmoid(s * z), torch.sigmoid(-s * z)
        return s * one_minus**gamma * (gamma * p_t * log_pt - one_minus)

    return grad


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_focal_loss_gradient_is_lin_et_als_closed_form(gamma):
    z = torch.linspace(-40, 40, 161, dtype=F64).requires_grad_()
    for label in (0.0, 1.0):
        y = torch.full_like(z, label)
        loss = sigmoid_focal_loss(z, y, None, gamma, "sum")
        (grad,) = torch.autograd.grad(loss, z)
        expected = closed_form_gradient(z.detach(), y)(gamma)
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-300)


@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**16),
    alpha=alphas,
    gamma=gammas,
    hard=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
)
def test_focal_loss_first_and_second_derivatives_match_plain_autograd(
    seed, alpha, gamma, hard, reduction
):
    g = torch.Generator().manual_seed(seed)
    z = (3 * torch.randn(7, generator=g, dtype=F64)).requires_grad_()
    if hard:
        y = torch.randint(0, 2, (7,), generator=g).to(F64)
    else:
        y = torch.rand(7, generator=g, dtype=F64)
    grads = []
    for loss_fn in (sigmoid_focal_loss, None):
        if loss_fn is None:
            loss = reduce(naive_focal(z, y, alpha, gamma), reduction)
        else:
            loss = loss_fn(z, y, alpha, gamma, reduction)
        upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=F64)
        (first,) = torch.autograd.grad(
            loss, z, upstream.reshape(loss.shape), create_graph=True
        )
        (second,) = torch.autograd.grad(first.sum(), z)
        grads.append((first.detach(), second))
    for ours, naive in zip(*grads):
        torch.testing.assert_close(ours, naive, rtol=1e-9, atol=1e-12)


def test_focal_loss_works_with_torch_func_to_third_order():
    z = torch.tensor([-2.0, 0.3, 1.7], dtype=F64)
    y = torch.tensor([1.0, 0.0, 0.6], dtype=F64)

    def loss(t):
        return sigmoid_focal_loss(t, y, 0.25, 1.5, "sum")

    third = torch.func.grad(
        lambda t: torch.func.grad(lambda u: torch.func.grad(loss)(u).sum())(
            t
        ).sum()
    )(z)

    def naive(t):
        return naive_focal(t, y, 0.25, 1.5).sum()

    expected = torch.func.grad(
        lambda t: torch.func.grad(lambda u: torch.func.grad(naive)(u).sum())(
            t
        ).sum()
    )(z)
    torch.testing.assert_close(third, expected, rtol=1e-9, atol=1e-12)
    hessian = torch.func.jacrev(torch.func.grad(loss))(z)
    naive_hessian = torch.func.jacrev(torch.func.grad(naive))(z)
    torch.testing.assert_close(hessian, naive_hessian, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("gamma", [0.01, 0.5, 1.5, 2.0])
def test_focal_loss_derivatives_stay_finite_at_saturated_logits(dtype, gamma):
    """A literal (1 - p)**gamma gives NaN slopes once 1 - p_t rounds to 0
    and gamma < 1 (first order) or gamma < 2 (second order)."""
    z = torch.tensor(
        [-1e4, -800.0, -120.0, -100.0, 100.0, 120.0, 800.0, 1e4], dtype=dtype
    ).requires_grad_()
    for label in (0.0, 1.0, 0.5):
        y = torch.full_like(z, label)
        loss = sigmoid_focal_loss(z, y, 0.25, gamma, "sum")
        (first,) = torch.autograd.grad(loss, z, create_graph=True)
        (second,) = torch.autograd.grad(first.sum(), z, create_graph=True)
        (third,) = torch.autograd.grad(second.sum(), z)
        for t in (loss, first, second, third):
            assert torch.isfinite(t).all()
    y = torch.ones_like(z)
    literal = naive_focal(z, y, 0.25, 0.5).sum()
    (literal_grad,) = torch.autograd.grad(literal, z)
    assert torch.isnan(literal_grad).any()  # what the library avoids


def test_focal_loss_gradcheck_and_gradgradcheck():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    y = torch.rand(2, 3, generator=g, dtype=F64)
    y[0] = torch.tensor([0.0, 1.0, 1.0], dtype=F64)

    def fn(t):
        return sigmoid_focal_loss(t, y, 0.3, 1.7, "none")

    assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradgradcheck(fn, (z,))


def test_focal_loss_runs_under_vmap_with_validation_off():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(5, 3, generator=g, dtype=F64)
    y = torch.randint(0, 2, (5, 3), generator=g).to(F64)
    with ce_lib.validation(False):
        per_row = torch.func.vmap(lambda a, b: sigmoid_focal_loss(a, b))(z, y)
        grads = torch.func.vmap(
            torch.func.grad(lambda a, b: sigmoid_focal_loss(a, b))
        )(z, y)
    expected = sigmoid_focal_loss(z, y, reduction="none").mean(dim=1)
    torch.testing.assert_close(per_row, expected, rtol=1e-14, atol=0)
    assert grads.shape == (5, 3) and torch.isfinite(grads).all()


def test_validation_off_skips_the_data_checks_only():
    with ce_lib.validation(False):
        out = sigmoid_focal_loss([0.0], [2.0], reduction="none")  # unchecked
        assert out.shape == (1,)
        with pytest.raises(ValueError, match="gamma"):
            sigmoid_focal_loss([0.0], [1.0], gamma=-1.0)  # arguments still


# ---- bad input ----

BAD = {
    "gamma negative": (
        {"gamma": -0.5},
        r"gamma must be a finite number >= 0",
    ),
    "gamma inf": ({"gamma": math.inf}, r"gamma must be a finite number >= 0"),
    "gamma nan": ({"gamma": math.nan}, r"gamma must be a finite number >= 0"),
    "gamma string": ({"gamma": "2"}, r"gamma must be a finite number >= 0"),
    "alpha negative": ({"alpha": -0.1}, r"alpha must lie in \[0, 1\]"),
    "alpha above 1": ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
    "alpha nan": ({"alpha": math.nan}, r"alpha must lie in \[0, 1\]"),
    "target above 1": (
        {"target": [0.0, 1.5]},
        r"target must lie in \[0, 1\]",
    ),
    "target negative": (
        {"target": [-1.0, 1.0]},
        r"target must lie in \[0, 1\]",
    ),
    "target nan": (
        {"target": [math.nan, 1.0]},
        "target must not contain NaN",
    ),
    "shapes": (
        {"target": [1.0]},
        "logits and target must have the same shape",
    ),
    "reduction": ({"reduction": "avg"}, "reduction must be one of"),
    "logits nan": ({"logits": [math.nan, 0.0]}, "logits must be finite"),
    "logits inf": (
        {"logits": [math.inf, 0.0], "target": [1.0, 0.0]},
        "logits must be finite",
    ),
    "empty mean": ({"logits": [], "target": []}, "nothing to average"),
}


@pytest.mark.parametrize("change, message", BAD.values(), ids=BAD.keys())
def test_focal_loss_rejects_bad_input(change, message):
    kwargs = {"logits": [0.5, -0.5], "target": [1.0, 0.0]} | change
    with pytest.raises(ValueError, match=message):
        sigmoid_focal_loss(**kwargs)


@pytest.mark.parametrize("check", [True, False])
def test_focal_loss_rejects_a_target_that_requires_grad(check):
    """Never a silent zero gradient for the target, validation on or off."""
    y = torch.tensor([0.3, 0.9], requires_grad=True)
    with ce_lib.validation(check):
        with pytest.raises(ValueError, match=r"target must not require"):
            sigmoid_focal_loss(torch.zeros(2), y)
        with pytest.raises(ValueError, match=r"target must not require"):
            torch.func.grad(lambda t: sigmoid_focal_loss(torch.zeros(2), t))(
                y.detach()
            )
