"""Distribution Focal Loss, two-hot targets and the Integral (chapter 4)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import ce_lib
from ce_lib import cross_entropy, distribution_focal_loss, integral, two_hot
from conftest import DEVICES

# ---- references from the formulas, one target at a time, in float64 ----


def left_neighbour(y: float, bins: list[float]) -> int:
    """i with bins[i] <= y <= bins[i+1] (the last pair for y on the last
    bin)."""
    return max(i for i in range(len(bins) - 1) if bins[i] <= y)


def dfl_reference(
    logits: torch.Tensor, y: torch.Tensor, bins: list[float]
) -> torch.Tensor:
    """-((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1}), S = softmax(z)."""
    log_S = torch.log_softmax(logits.double().reshape(-1, len(bins)), dim=1)
    values = []
    for n, target in enumerate(y.double().flatten().tolist()):
        i = left_neighbour(target, bins)
        values.append(
            -(
                (bins[i + 1] - target) * log_S[n, i].item()
                + (target - bins[i]) * log_S[n, i + 1].item()
            )
        )
    return torch.tensor(values, dtype=torch.float64).reshape(y.shape)


def detector_dfl(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The GFL / mmdetection form: two cross-entropies weighted by the
    distances to the neighbours."""
    left = label.long()
    right = left + 1
    return F.cross_entropy(pred, left, reduction="none") * (
        right.to(label.dtype) - label
    ) + F.cross_entropy(pred, right, reduction="none") * (
        label - left.to(label.dtype)
    )


@st.composite
def dfl_problems(draw):
    batch = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    K = draw(st.integers(2, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    if draw(st.booleans()):
        bins_list = (
            torch.cumsum(
                0.2 + 2 * torch.rand(K, generator=g, dtype=torch.float64), 0
            )
            .sub(1.0)
            .tolist()
        )
        bins = torch.tensor(bins_list, dtype=dtype)
        bins_list = bins.double().tolist()
    else:
        bins, bins_list = None, [float(k) for k in range(K)]
    u = torch.rand(batch, generator=g, dtype=torch.float64)
    y = (bins_list[0] + u * (bins_list[-1] - bins_list[0])).to(dtype)
    y.view(-1)[0] = bins_list[
        draw(st.integers(0, K - 1))
    ]  # a target exactly on a bin, the last one included
    logits = draw(st.sampled_from([1.0, 4.0])) * torch.randn(
        *batch, K, generator=g, dtype=dtype
    )
    return logits, y, bins, bins_list


@given(
    problem=dfl_problems(), reduction=st.sampled_from(["none", "mean", "sum"])
)
def test_dfl_matches_the_formula_for_unit_and_custom_bins(problem, reduction):
    logits, y, bins, bins_list = problem
    ours = distribution_focal_loss(logits, y, bins=bins, reduction=reduction)
    assert ours.dtype == logits.dtype
    reference = dfl_reference(logits, y, bins_list)
    reference = (
        reference.mean()
        if reduction == "mean"
        else reference.sum()
        if reduction == "sum"
        else reference
    )
    tol = (
        dict(rtol=1e-5, atol=1e-5)
        if logits.dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-10)
    )
    torch.testing.assert_close(ours.double(), reference, **tol)


@given(problem=dfl_problems())
def test_dfl_with_unit_bins_and_its_gradients_match_the_two_cross_entropy_form(
    problem,
):
    logits, y, _, bins_list = problem
    K = len(bins_list)
    y = (
        (y - bins_list[0]) / (bins_list[-1] - bins_list[0]) * (K - 1)
    )  # onto the bins 0..K-1
    y = y.clamp(
        0, K - 1 - 0.01
    )  # the detector form cannot take y on the last bin
    z = logits.reshape(-1, K).clone().requires_grad_()
    label = y.reshape(-1).clone().requires_grad_()
    ours = distribution_focal_loss(z, label, reduction="none")
    theirs = detector_dfl(z, label)
    tol = (
        dict(rtol=1e-5, atol=1e-6)
        if z.dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-12)
    )
    torch.testing.assert_close(ours, theirs, **tol)
    upstream = torch.rand(ours.shape, dtype=z.dtype)
    for a, b in zip(
        torch.autograd.grad(ours, (z, label), upstream),
        torch.autograd.grad(theirs, (z, label), upstream),
    ):
        torch.testing.assert_close(a, b, **tol)


@given(problem=dfl_problems())
def test_dfl_is_the_bin_width_times_cross_entropy_against_two_hot(problem):
    logits, y, bins, bins_list = problem
    K = len(bins_list)
    positions = torch.tensor(bins_list, dtype=torch.float64)
    y64 = y.double().reshape(-1)
    i = torch.tensor([left_neighbour(t, bins_list) for t in y64.tolist()])
    width = positions[i + 1] - positions[i]
    target = two_hot(y64, positions if bins is not None else K)
    expected = width * cross_entropy(
        logits.double().reshape(-1, K), target, reduction="none"
    )
    ours = distribution_focal_loss(
        logits.double(),
        y.double(),
        bins=None if bins is None else positions,
        reduction="none",
    )
    torch.testing.assert_close(
        ours.reshape(-1), expected, rtol=1e-10, atol=1e-12
    )


def test_dfl_gradient_is_width_times_softmax_minus_the_two_hot_masses():
    bins = torch.tensor([-1.0, 0.5, 2.5, 3.0], dtype=torch.float64)
    z = torch.tensor(
        [[0.3, -1.0, 2.0, 0.5]], dtype=torch.float64, requires_grad=True
    )
    y = torch.tensor(
        [1.0], dtype=torch.float64
    )  # between 0.5 and 2.5: width 2, distances 1.5 and 0.5
    distribution_focal_loss(z, y, bins=bins).backward()
    expected = 2.0 * torch.softmax(z.detach(), 1) - torch.tensor(
        [[0.0, 1.5, 0.5, 0.0]], dtype=torch.float64
    )
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)
    y_req = y.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: distribution_focal_loss(a, b, bins=bins, reduction="sum"),
        (z.detach().clone().requires_grad_(), y_req),
    )


@pytest.mark.parametrize("K", [16, 17])
def test_uniform_logits_give_log_K_for_any_y(K):
    y = torch.tensor([0.0, 0.5, 3.3, K - 1.0], dtype=torch.float64)
    loss = distribution_focal_loss(
        torch.zeros(4, K, dtype=torch.float64), y, reduction="none"
    )
    torch.testing.assert_close(
        loss,
        torch.full((4,), math.log(K), dtype=torch.float64),
        rtol=1e-14,
        atol=0,
    )


def test_worked_value_logits_0_to_4_with_y_1_25():
    loss = distribution_focal_loss([0.0, 1.0, 2.0, 3.0, 4.0], 1.25)
    assert loss.item() == pytest.approx(3.201914, abs=5e-7)


def test_minimum_at_y_3_3_is_the_binary_entropy_of_0_7():
    S = torch.tensor(
        [0.0, 0.0, 0.0, 0.7, 0.3] + [0.0] * 12, dtype=torch.float64
    )
    logits = torch.where(
        S > 0, torch.log(S), torch.tensor(-1e4, dtype=torch.float64)
    )
    loss = distribution_focal_loss(logits, 3.3)
    assert loss.item() == pytest.approx(0.61086, abs=5e-6)
    assert loss.item() == pytest.approx(
        -(0.7 * math.log(0.7) + 0.3 * math.log(0.3)), rel=1e-12
    )
    assert integral(logits).item() == pytest.approx(3.3, rel=1e-12)


@pytest.mark.parametrize(
    "bins",
    [
        None,
        torch.tensor([-2.0, -1.0, 0.5, 1.0, 3.0, 4.0], dtype=torch.float64),
    ],
)
def test_minimising_dfl_drives_the_integral_to_y_and_S_i_to_the_left_mass(
    bins,
):
    positions = torch.arange(6, dtype=torch.float64) if bins is None else bins
    y = (
        torch.tensor([0.3, 1.7, 2.25, 3.9], dtype=torch.float64)
        if bins is None
        else torch.tensor([-1.4, 0.8, 2.0, 3.5], dtype=torch.float64)
    )
    z = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([z], lr=0.5)
    with ce_lib.validation(False):  # valid inputs: the same steps, faster
        for _ in range(100):  # within 1e-3 of the optimum
            optimiser.zero_grad()
            loss = distribution_focal_loss(z, y, bins=bins, reduction="sum")
            loss.backward()
            optimiser.step()
    torch.testing.assert_close(
        integral(z.detach(), bins=bins), y, rtol=0, atol=2e-2
    )
    S = torch.softmax(z.detach(), dim=1)
    masses = two_hot(y, positions if bins is not None else 6)
    i = (
        masses.gt(0).double().argmax(dim=1)
    )  # the left neighbour (the first bin with mass)
    torch.testing.assert_close(
        S.gather(1, i[:, None]),
        masses.gather(1, i[:, None]),
        rtol=0,
        atol=2e-2,
    )


def test_an_integer_y_reduces_to_cross_entropy_on_that_bin():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 5, 7, 2])
    torch.testing.assert_close(
        distribution_focal_loss(z, y.double(), reduction="none"),
        cross_entropy(z, y, reduction="none"),
        rtol=1e-14,
        atol=0,
    )


def test_reduction_none_keeps_the_shape_and_the_mean_of_four_sides_is_yolos():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(10, 4, 16, generator=g, dtype=torch.float64)
    y = 14.99 * torch.rand(10, 4, generator=g, dtype=torch.float64)
    per_side = distribution_focal_loss(z, y, reduction="none")
    assert per_side.shape == (10, 4)
    yolo_per_box = (
        detector_dfl(z.reshape(-1, 16), y.reshape(-1)).reshape(10, 4).mean(-1)
    )
    torch.testing.assert_close(
        per_side.mean(-1), yolo_per_box, rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        distribution_focal_loss(z, y), yolo_per_box.mean(), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_of_1e4_give_the_finite_loss_and_gradient_of_the_detector_form(
    dtype,
):
    z = torch.tensor(
        [[1e4, -1e4, 0.0, 5.0], [-1e4, 1e4, 1e4, -1e4]],
        dtype=dtype,
        requires_grad=True,
    )
    y = torch.tensor([0.25, 1.5], dtype=dtype)
    ours = distribution_focal_loss(z, y, reduction="none")
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, detector_dfl(z, y), rtol=1e-6, atol=0)
    (grad_ours,) = torch.autograd.grad(ours.sum(), z)
    (grad_theirs,) = torch.autograd.grad(detector_dfl(z, y).sum(), z)
    assert torch.isfinite(grad_ours).all()
    torch.testing.assert_close(grad_ours, grad_theirs)
    torch.testing.assert_close(
        integral(z.detach()), torch.tensor([0.0, 1.5], dtype=dtype)
    )


# ---- two_hot and integral ----


@given(problem=dfl_problems())
def test_two_hot_puts_the_mass_on_the_two_neighbours_with_expectation_y(
    problem,
):
    _, y, bins, bins_list = problem
    K = len(bins_list)
    positions = torch.tensor(bins_list, dtype=torch.float64)
    target = two_hot(y.double(), positions if bins is not None else K)
    assert target.shape == y.shape + (K,)
    torch.testing.assert_close(
        target.sum(-1), torch.ones(y.shape, dtype=torch.float64)
    )
    torch.testing.assert_close(
        target @ positions, y.double(), rtol=1e-12, atol=1e-12
    )
    assert ((target > 0).sum(-1) <= 2).all()
    for t, row in zip(y.double().flatten().tolist(), target.reshape(-1, K)):
        i = left_neighbour(t, bins_list)
        left_mass = (bins_list[i + 1] - t) / (bins_list[i + 1] - bins_list[i])
        assert row[i].item() == pytest.approx(left_mass, abs=1e-12)
        assert row[i + 1].item() == pytest.approx(1 - left_mass, abs=1e-12)


def test_two_hot_accepts_y_on_the_last_bin_and_an_int_K():
    expected = torch.tensor(
        [[0, 0, 0, 0.7, 0.3], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(
        two_hot([3.3, 4.0, 0.0], 5), expected, rtol=0, atol=1e-12
    )


@given(problem=dfl_problems())
def test_integral_is_the_expectation_of_the_bins(problem):
    logits, _, bins, bins_list = problem
    ours = integral(logits, bins=bins)
    assert ours.shape == logits.shape[:-1] and ours.dtype == logits.dtype
    expected = torch.softmax(logits.double(), -1) @ torch.tensor(
        bins_list, dtype=torch.float64
    )
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-6)
    assert (ours.double() >= bins_list[0] - 1e-5).all() and (
        ours.double() <= bins_list[-1] + 1e-5
    ).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_close_to_float64(dtype):
    g = torch.Generator().manual_seed(2)
    z = (3 * torch.randn(64, 16, generator=g)).to(dtype)
    y = (15 * torch.rand(64, generator=g)).to(dtype)
    ours = distribution_focal_loss(z, y, reduction="none")
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    torch.testing.assert_close(
        ours.double(),
        dfl_reference(z, y, [float(k) for k in range(16)]),
        rtol=1e-2,
        atol=2e-2,
    )
    assert integral(z).dtype == dtype


@pytest.mark.parametrize("device", DEVICES)
def test_dfl_runs_on_the_device_of_its_inputs(device):
    g = torch.Generator().manual_seed(3)
    z_cpu, y_cpu = (
        torch.randn(12, 16, generator=g),
        15 * torch.rand(12, generator=g),
    )
    bins_cpu = torch.linspace(0, 3, 16)
    z = z_cpu.to(device).requires_grad_()
    loss = distribution_focal_loss(
        z, y_cpu.to(device)
    ) + distribution_focal_loss(
        z, y_cpu.to(device) / 5, bins=bins_cpu.to(device)
    )
    assert loss.device.type == device
    loss.backward()
    z_ref = z_cpu.detach().clone().requires_grad_()
    expected = detector_dfl(z_ref, y_cpu).mean() + distribution_focal_loss(
        z_ref, y_cpu / 5, bins=bins_cpu
    )
    expected.backward()
    check = dfl_reference(z_cpu, y_cpu / 5, bins_cpu.double().tolist()).mean()
    torch.testing.assert_close(
        loss.cpu(), expected.detach(), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        expected.double() - detector_dfl(z_cpu, y_cpu).mean(),
        check,
        rtol=1e-5,
        atol=1e-5,
    )
    torch.testing.assert_close(z.grad.cpu(), z_ref.grad, rtol=1e-5, atol=1e-6)
    assert integral(z, bins=bins_cpu.to(device)).device.type == device
    assert two_hot(y_cpu.to(device), 16).device.type == device


# ---- edges found by adversarial testing ----


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_keep_bins_and_targets_exact_above_256(dtype):
    # bins 0..299: bfloat16 cannot hold 257 and 299, float32 can
    z = torch.zeros(2, 300, dtype=dtype)
    y = torch.tensor([257.0, 298.5])
    loss = distribution_focal_loss(z, y, reduction="none")
    torch.testing.assert_close(
        loss.float(), torch.full((2,), math.log(300)), rtol=1e-2, atol=0
    )
    expected = distribution_focal_loss(
        z.float(), y, reduction="none"
    )  # the float32 loss, rounded
    torch.testing.assert_close(loss, expected.to(dtype), rtol=0, atol=0)
    with pytest.raises(
        ValueError,
        match=r"y must lie in \[0, 299\]; got values in \[300, 300\]",
    ):
        distribution_focal_loss(z[:1], torch.tensor([300.0]))
    assert integral(
        torch.zeros(300, dtype=dtype)
    ).float().item() == pytest.approx(149.5, abs=0.5)
    torch.testing.assert_close(
        two_hot(torch.tensor([257.0]), 300)[0, 257], torch.tensor(1.0)
    )


@pytest.mark.parametrize(
    "bad", [[0.0, 1.0, math.inf], [0.0, math.nan, 1.0], [-math.inf, 0.0, 1.0]]
)
def test_non_finite_bins_raise(bad):
    bins = torch.tensor(bad)
    with pytest.raises(ValueError, match="bins must be finite"):
        distribution_focal_loss(
            torch.zeros(1, 3), torch.tensor([0.5]), bins=bins
        )
    with pytest.raises(ValueError, match="bins must be finite"):
        two_hot([0.5], bins)
    with pytest.raises(ValueError, match="bins must be finite"):
        integral(torch.zeros(3), bins=bins)


@pytest.mark.parametrize("y, masked", [(2.0, 3), (4.0, 3), (0.0, 1)])
def test_y_on_a_bin_next_to_a_masked_bin_gives_minus_log_S_of_that_bin(
    y, masked
):
    # the neighbour's weight is 0, its log-probability -inf: 0 log 0 = 0
    z = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    z[masked] = -math.inf
    z.requires_grad_()
    loss = distribution_focal_loss(z, y)
    log_S = torch.log_softmax(z.detach(), dim=0)
    assert loss.item() == pytest.approx(-log_S[int(y)].item(), rel=1e-14)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    expected = (
        torch.softmax(z.detach(), 0)
        - F.one_hot(torch.tensor(int(y)), 5).double()
    )
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)


def test_masked_bins_without_mass_leave_the_loss_finite_and_nan_says_why():
    z = torch.tensor([[-math.inf, 0.0, 1.0, -math.inf]])
    assert torch.isfinite(distribution_focal_loss(z, torch.tensor([1.5])))
    assert (
        distribution_focal_loss(z, torch.tensor([0.5])).item() == math.inf
    )  # mass on a masked bin
    with pytest.raises(ValueError, match=r"logits must not contain \+inf"):
        distribution_focal_loss(
            torch.tensor([[0.0, math.inf, 1.0]]), torch.tensor([0.5])
        )
    with pytest.raises(
        ValueError, match="logits must not be -inf for every bin"
    ):
        distribution_focal_loss(
            torch.full((1, 3), -math.inf), torch.tensor([0.5])
        )
    with pytest.raises(ValueError, match="logits must not contain NaN"):
        distribution_focal_loss(
            torch.tensor([[0.0, math.nan, 1.0]]), torch.tensor([0.5])
        )


@pytest.mark.parametrize(
    "row, message",
    [
        ([0.0, math.nan, 1.0], "logits must not contain NaN"),
        ([0.0, math.inf, 1.0], r"logits must not contain \+inf"),
        ([-math.inf] * 3, "logits must not be -inf for every bin"),
    ],
)
def test_an_integral_that_comes_out_nan_says_why(row, message):
    with pytest.raises(ValueError, match=message):
        integral(torch.tensor([[0.0, 1.0, 2.0], row]))
    assert integral(torch.tensor([-math.inf, 0.0, 0.0])).item() == 1.5
