"""Calibration (chapter 5): the expected calibration error on cases that
can be checked by hand and against a loop over the bins, its binary form,
and temperature scaling recovering a known temperature."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import ce_lib
from ce_lib import expected_calibration_error, fit_temperature
from ce_lib.calibration import reliability_bins
from conftest import DEVICES

F64 = torch.float64


# ---- a reference: one bin at a time, (m-1)/M < confidence <= m/M ----


def ece_reference(probs, target, n_bins):
    rows = probs.double().tolist()
    labels = [int(t) for t in target.tolist()]
    conf = [max(r) for r in rows]
    correct = [float(r.index(max(r)) == t) for r, t in zip(rows, labels)]
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        members = [
            i
            for i, c in enumerate(conf)
            if lo < c <= hi or (m == 1 and c == 0)
        ]
        if members:
            acc = sum(correct[i] for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / len(rows) * abs(acc - mean_conf)
    return total


def random_probs(g, N, C, sharpness=3.0, dtype=F64):
    z = sharpness * torch.randn(N, C, generator=g, dtype=F64)
    return torch.softmax(z, dim=1).to(dtype)


# ---- the expected calibration error ----


@given(
    N=st.integers(1, 60),
    C=st.integers(2, 6),
    n_bins=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, F64]),
)
def test_ece_matches_a_loop_over_the_bins(N, C, n_bins, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    probs = random_probs(g, N, C, dtype=dtype)
    target = torch.randint(0, C, (N,), generator=g)
    ours = expected_calibration_error(probs, target, n_bins)
    assert ours.dtype == dtype and ours.shape == ()
    expected = ece_reference(probs, target, n_bins)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert ours.item() == pytest.approx(expected, rel=tol, abs=tol)


def test_ece_by_hand_one_sample_per_bin():
    probs = torch.tensor(
        [[0.95, 0.05], [0.25, 0.75], [0.35, 0.65]], dtype=F64
    )  # confidences 0.95, 0.75, 0.65 in bins 10, 8 and 7 of 10
    target = torch.tensor([0, 1, 0])  # right, right, wrong
    ece = expected_calibration_error(probs, target, n_bins=10).item()
    assert ece == pytest.approx((0.05 + 0.25 + 0.65) / 3, rel=1e-15)


def test_ece_by_hand_gaps_in_one_bin_cancel():
    """Confidence 0.7 on ten samples, seven right: calibrated, ECE 0."""
    probs = torch.tensor([[0.7, 0.2, 0.1]] * 10, dtype=F64)
    target = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(probs, target).item() == pytest.approx(
        0.0, abs=1e-15
    )
    target = torch.tensor([0] * 10)  # all right: the gap is 1 - 0.7
    assert expected_calibration_error(probs, target).item() == pytest.approx(
        0.3, rel=1e-14
    )


def test_ece_is_zero_for_certain_right_answers_and_one_for_certain_wrong():
    probs = torch.eye(4, dtype=F64)
    right, wrong = torch.arange(4), (torch.arange(4) + 1) % 4
    assert expected_calibration_error(probs, right).item() == 0.0
    assert expected_calibration_error(probs, wrong).item() == 1.0


def test_ece_with_one_bin_is_the_gap_between_accuracy_and_mean_confidence():
    g = torch.Generator().manual_seed(1)
    probs = random_probs(g, 500, 4)
    target = torch.randint(0, 4, (500,), generator=g)
    conf, predicted = probs.max(dim=1)
    accuracy = (predicted == target).double().mean()
    ece = expected_calibration_error(probs, target, n_bins=1)
    assert ece.item() == pytest.approx(
        abs(accuracy - conf.mean()).item(), rel=1e-13
    )


def test_ece_puts_a_confidence_on_an_edge_in_the_lower_bin():
    """0.6 = 3/5 belongs to (0.4, 0.6], not to (0.6, 0.8]."""
    probs = torch.tensor([[0.6, 0.4], [0.7, 0.3]], dtype=F64)
    target = torch.tensor([0, 1])  # right at 0.6, wrong at 0.7
    _conf, _acc, count = reliability_bins(probs, target, n_bins=5)
    assert count.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    ece = expected_calibration_error(probs, target, n_bins=5).item()
    assert ece == pytest.approx((0.4 + 0.7) / 2, rel=1e-15)


def test_binary_form_is_the_two_column_form():
    g = torch.Generator().manual_seed(2)
    p1 = torch.rand(300, generator=g, dtype=F64)
    y = torch.randint(0, 2, (300,), generator=g)
    two_columns = torch.stack([1 - p1, p1], dim=1)
    for n_bins in (1, 10, 15):
        assert torch.equal(
            expected_calibration_error(p1, y, n_bins),
            expected_calibration_error(two_columns, y, n_bins),
        )
    # the confidence is max(p, 1 - p): p = 0.2 is a confident class 0
    ece = expected_calibration_error([0.2, 0.9], [0, 1], n_bins=10).item()
    assert ece == pytest.approx((0.2 + 0.1) / 2, rel=1e-14)


def test_ece_accepts_float_labels_and_numpy():
    import numpy as np

    ece = expected_calibration_error(
        np.array([0.2, 0.9]), np.array([0.0, 1.0])
    )
    assert ece.item() == pytest.approx(0.15, rel=1e-14)
    assert ece.dtype == F64


def test_ece_does_not_depend_on_the_order_of_the_samples():
    g = torch.Generator().manual_seed(3)
    probs = random_probs(g, 200, 3)
    target = torch.randint(0, 3, (200,), generator=g)
    perm = torch.randperm(200, generator=g)
    a = expected_calibration_error(probs, target)
    b = expected_calibration_error(probs[perm], target[perm])
    assert a.item() == pytest.approx(b.item(), rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ece_of_half_precision_probabilities_is_float32(dtype):
    g = torch.Generator().manual_seed(4)
    probs = random_probs(g, 100, 3).to(dtype)
    target = torch.randint(0, 3, (100,), generator=g)
    ece = expected_calibration_error(probs, target)
    assert ece.dtype == torch.float32
    expected = ece_reference(probs, target, 15)
    assert ece.item() == pytest.approx(expected, rel=1e-6)


def test_ece_gradient_moves_each_confidence_towards_its_bins_accuracy():
    """dECE/dconf_n = -sign(acc - conf of n's bin) / N, 0 off the top class."""
    probs = torch.tensor(
        [[0.9, 0.1], [0.85, 0.15], [0.4, 0.6], [0.45, 0.55]], dtype=F64
    ).requires_grad_()
    target = torch.tensor([0, 1, 1, 1])  # bin (.8, .9]: half right
    ece = expected_calibration_error(probs, target, n_bins=10)
    (grad,) = torch.autograd.grad(ece, probs)
    # bin (0.8, 0.9] holds 0.9 (right) and 0.85 (wrong): acc < conf, so
    # dECE/dconf = +1/4; bin (0.5, 0.6] holds 0.6 and 0.55, both right:
    # acc > conf, so -1/4
    expected = torch.tensor(
        [[0.25, 0.0], [0.25, 0.0], [0.0, -0.25], [0.0, -0.25]], dtype=F64
    )
    assert torch.equal(grad, expected)
    func_grad = torch.func.grad(
        lambda p: expected_calibration_error(p, target, n_bins=10)
    )(probs.detach())
    assert torch.equal(func_grad, expected)


def test_reliability_bins_counts_the_samples_and_marks_empty_bins():
    g = torch.Generator().manual_seed(5)
    probs = random_probs(g, 400, 5)
    target = torch.randint(0, 5, (400,), generator=g)
    conf, acc, count = reliability_bins(probs, target, n_bins=10)
    assert count.sum().item() == 400
    assert count[0].item() == 0 and math.isnan(conf[0].item())  # conf > 1/5
    full = count > 0
    ece = (count[full] / 400 * (acc[full] - conf[full]).abs()).sum()
    assert ece.item() == pytest.approx(
        expected_calibration_error(probs, target, 10).item(), rel=1e-13
    )


@pytest.mark.parametrize("device", DEVICES)
def test_ece_is_the_same_on_every_device(device):
    g = torch.Generator().manual_seed(6)
    probs = random_probs(g, 1000, 10)
    target = torch.randint(0, 10, (1000,), generator=g)
    here = expected_calibration_error(probs, target)
    there = expected_calibration_error(probs.to(device), target.to(device))
    assert there.item() == pytest.approx(here.item(), rel=1e-12)


def test_ece_with_validation_off_gives_the_same_value_without_checks():
    g = torch.Generator().manual_seed(7)
    probs = random_probs(g, 50, 4)
    target = torch.randint(0, 4, (50,), generator=g)
    checked = expected_calibration_error(probs, target)
    with ce_lib.validation(False):
        assert torch.equal(expected_calibration_error(probs, target), checked)
        expected_calibration_error(probs * 2, target)  # unchecked: no error


# ---- temperature scaling ----


def synthetic(g, N, C, T, sharpness=2.0):
    """Labels drawn from softmax(z); the model reports T z (T times too
    sharp for T > 1), so the temperature that repairs it is T."""
    z = sharpness * torch.randn(N, C, generator=g, dtype=F64)
    y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g)[:, 0]
    return T * z, y


def test_fit_temperature_recovers_a_known_temperature():
    """Labels drawn from softmax(z), logits 2.5 z: T = 2.5 (any other T
    scales with it: see the equivariance test)."""
    g = torch.Generator().manual_seed(8)
    logits, y = synthetic(g, 10000, 6, 2.5)
    fitted = fit_temperature(logits, y)
    assert isinstance(fitted, float)
    assert fitted == pytest.approx(2.5, rel=0.03)


def test_fit_temperature_recovers_a_known_temperature_binary():
    g = torch.Generator().manual_seed(9)
    z = 3 * torch.randn(20000, generator=g, dtype=F64)
    y = torch.bernoulli(torch.sigmoid(z), generator=g).long()
    assert fit_temperature(2.0 * z, y) == pytest.approx(2.0, rel=0.04)
    two_columns = torch.stack([torch.zeros_like(z), 2.0 * z], dim=1)
    assert fit_temperature(2.0 * z, y) == pytest.approx(
        fit_temperature(two_columns, y), rel=1e-13
    )


def test_fit_temperature_is_a_stationary_point_and_a_minimum_of_the_nll():
    g = torch.Generator().manual_seed(10)
    logits, y = synthetic(g, 3000, 4, 1.7)
    T = fit_temperature(logits, y)
    t = torch.tensor(T, dtype=F64, requires_grad=True)
    (slope,) = torch.autograd.grad(F.cross_entropy(logits / t, y), t)
    assert abs(slope.item()) < 1e-12

    def nll(s):
        return F.cross_entropy(logits / s, y).item()

    for factor in (0.999, 1.001, 0.9, 1.1, 0.5, 2.0):
        assert nll(T) < nll(T * factor)


def test_fit_temperature_is_deterministic_and_scale_equivariant():
    g = torch.Generator().manual_seed(11)
    logits, y = synthetic(g, 2000, 5, 2.0)
    T = fit_temperature(logits, y)
    assert fit_temperature(logits, y) == T  # bitwise
    assert fit_temperature(3.0 * logits, y) == pytest.approx(
        3.0 * T, rel=1e-12
    )
    assert fit_temperature(logits.float(), y) == pytest.approx(T, rel=1e-6)


def test_fit_temperature_leaves_the_predictions_and_lowers_the_held_out_ece():
    g = torch.Generator().manual_seed(12)
    logits, y = synthetic(g, 8000, 10, 3.0)
    fit, held_out = slice(0, 4000), slice(4000, None)
    T = fit_temperature(logits[fit], y[fit])
    before = torch.softmax(logits[held_out], dim=1)
    after = torch.softmax(logits[held_out] / T, dim=1)
    assert torch.equal(before.argmax(1), after.argmax(1))
    ece_before = expected_calibration_error(before, y[held_out]).item()
    ece_after = expected_calibration_error(after, y[held_out]).item()
    assert ece_after < 0.03
    assert ece_before > 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_fit_temperature_is_the_same_on_every_device(device):
    g = torch.Generator().manual_seed(13)
    logits, y = synthetic(g, 1000, 3, 2.0)
    here = fit_temperature(logits, y)
    assert fit_temperature(logits.to(device), y.to(device)) == pytest.approx(
        here, rel=1e-12
    )


# ---- bad input ----

P = [[0.7, 0.3], [0.4, 0.6]]
ECE_BAD = {
    "n_bins 0": ({"n_bins": 0}, r"n_bins must be an integer >= 1; got 0"),
    "n_bins float": ({"n_bins": 2.5}, r"n_bins must be an integer >= 1"),
    "n_bins bool": ({"n_bins": True}, r"n_bins must be an integer >= 1"),
    "probs above 1": (
        {"probs": [[1.5, -0.5], [0.4, 0.6]]},
        r"probs must lie in \[0, 1\]",
    ),
    "probs nan": (
        {"probs": [[math.nan, 0.3], [0.4, 0.6]]},
        "must not contain NaN",
    ),
    "binary probs above 1": (
        {"probs": [0.5, 1.2]},
        r"probs must lie in \[0, 1\]",
    ),
    "rows do not sum to 1": (
        {"probs": [[0.7, 0.7], [0.4, 0.6]]},
        r"each row of probs must sum to 1 .*got row sums in \[1, 1.4\]",
    ),
    "probs (N, 1)": (
        {"probs": [[0.7], [0.4]]},
        r"probs must have shape \(N, C\)",
    ),
    "probs 3-d": (
        {"probs": torch.full((2, 2, 2), 0.5)},
        r"probs must have shape",
    ),
    "target shape": (
        {"target": [0, 1, 1]},
        r"target must have shape \(N,\) = \(2,\)",
    ),
    "target out of range": (
        {"target": [0, 2]},
        r"target must be a class index in \[0, 2\); got 2",
    ),
    "target negative": ({"target": [-1, 0]}, r"target must be a class index"),
    "target fraction": (
        {"target": [0.5, 1.0]},
        r"target must hold class indices",
    ),
    "empty": ({"probs": torch.zeros(0, 3), "target": []}, "probs is empty"),
}


@pytest.mark.parametrize(
    "change, message", ECE_BAD.values(), ids=ECE_BAD.keys()
)
def test_ece_rejects_bad_input(change, message):
    kwargs = {"probs": P, "target": [0, 1]} | change
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(**kwargs)
    if "n_bins" not in change:  # the bins share the checks
        with pytest.raises(ValueError, match=message):
            reliability_bins(**kwargs)


Z = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]]
T_BAD = {
    "all right": (
        {"target": [0, 1]},
        "every sample's true class has the largest logit",
    ),
    "worse than uniform": ({"target": [2, 0]}, "keeps falling as T grows"),
    "constant rows": (
        {"logits": torch.zeros(3, 4), "target": [0, 1, 2]},
        "keeps falling as T grows",
    ),
    "logits nan": (
        {"logits": [[math.nan, 0.0, 0.0], [0.0, 1.0, 0.5]]},
        "must be finite",
    ),
    "logits inf": (
        {"logits": [[math.inf, 0.0, 0.0], [0.0, 1.0, 0.5]]},
        "must be finite",
    ),
    "logits (N, 1)": (
        {"logits": [[1.0], [2.0]]},
        r"logits must have shape \(N, C\)",
    ),
    "target shape": (
        {"target": [0]},
        r"target must have shape \(N,\) = \(2,\)",
    ),
    "target range": (
        {"target": [0, 3]},
        r"target must be a class index in \[0, 3\)",
    ),
    "empty": ({"logits": torch.zeros(0, 3), "target": []}, "logits is empty"),
}


@pytest.mark.parametrize("change, message", T_BAD.values(), ids=T_BAD.keys())
def test_fit_temperature_rejects_bad_input(change, message):
    kwargs = {"logits": Z, "target": [1, 1]} | change
    with pytest.raises(ValueError, match=message):
        fit_temperature(**kwargs)
