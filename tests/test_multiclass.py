"""Multiclass cross-entropy (chapter 2): every option of torch's, against the formula and torch."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ce_lib import cross_entropy
from conftest import DEVICES

REDUCTIONS = ["none", "mean", "sum"]


# ---- the reference: torch's documented semantics, written out row by row in float64 ----

def log_softmax_reference(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    m = z.max(dim=1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))


def ce_reference(z, target, weight=None, ignore_index=-100, reduction="mean", eps=0.0):
    """l_n = -(1-eps) w[y_n] log q[n, y_n] - (eps/C) sum_c w_c log q[n, c]; mean divides by sum of w[y_n].

    With probabilities: l_n = -sum_c w_c ((1-eps) p_nc + eps/C) log q_nc; mean divides by N.
    """
    log_q = log_softmax_reference(z)
    N, C = log_q.shape
    w = torch.ones(C, dtype=torch.float64) if weight is None else weight.double()
    losses, denominator = [], 0.0
    for n in range(N):
        if target.is_floating_point():
            p = (1 - eps) * target[n].double() + eps / C
            losses.append(-(w * p * log_q[n]).sum().item())
            denominator += 1
        elif target[n] == ignore_index:
            losses.append(0.0)
        else:
            y = int(target[n])
            losses.append(-(1 - eps) * w[y].item() * log_q[n, y].item() - eps / C * (w * log_q[n]).sum().item())
            denominator += w[y].item()
    losses = torch.tensor(losses, dtype=torch.float64)
    if reduction == "none":
        return losses
    return losses.sum() / denominator if reduction == "mean" else losses.sum()


@st.composite
def problems(draw):
    """A random batch, target kind and every option of cross_entropy."""
    N, C = draw(st.integers(1, 9)), draw(st.integers(2, 7))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    z = draw(st.sampled_from([1.0, 5.0, 30.0])) * torch.randn(N, C, generator=g, dtype=dtype)
    probabilities = draw(st.booleans())
    ignore_index = -100
    if probabilities:
        target = torch.softmax(3 * torch.randn(N, C, generator=g, dtype=dtype), dim=1)
    else:
        target = torch.randint(0, C, (N,), generator=g)
        if draw(st.booleans()):  # ignore a real class, sometimes on several rows
            ignore_index = draw(st.integers(0, C - 1))
    weight = 2 * torch.rand(C, generator=g, dtype=dtype) + 0.1 if draw(st.booleans()) else None
    eps = draw(st.sampled_from([0.0, 0.0, 0.1, 0.35, 1.0]))
    reduction = draw(st.sampled_from(REDUCTIONS))
    return z, target, dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=eps)


def _nothing_to_average(target, options) -> bool:
    return (options["reduction"] == "mean" and not target.is_floating_point()
            and bool((target == options["ignore_index"]).all()))


@given(problem=problems())
def test_cross_entropy_matches_the_formula_for_every_option(problem):
    z, target, options = problem
    if _nothing_to_average(target, options):
        with pytest.raises(ValueError, match="nothing to average"):
            cross_entropy(z, target, **options)
        return
    ours = cross_entropy(z, target, **options)
    assert ours.dtype == z.dtype
    reference = ce_reference(z, target, options["weight"], options["ignore_index"], options["reduction"],
                             options["label_smoothing"])
    tol = dict(rtol=2e-6, atol=2e-6) if z.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.double(), reference, **tol)


@given(problem=problems())
def test_cross_entropy_and_its_gradient_match_torch_for_every_option(problem):
    z, target, options = problem
    if _nothing_to_average(target, options):
        assert torch.isnan(F.cross_entropy(z, target, **options))  # torch's silent NaN, ours raises
        return
    z = z.clone().requires_grad_()
    ours = cross_entropy(z, target, **options)
    theirs = F.cross_entropy(z, target, **options)
    tol = dict(rtol=1e-6, atol=1e-6) if z.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours, theirs, **tol)
    upstream = torch.rand(ours.shape, dtype=z.dtype)
    (grad_ours,) = torch.autograd.grad(ours, z, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, z, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("targets", ["indices", "indices+ignored", "probabilities"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_combination_of_options_matches_torch_and_the_formula(dtype, targets, weighted, label_smoothing, reduction):
    g = torch.Generator().manual_seed(7)
    N, C = 6, 5
    z = (3 * torch.randn(N, C, generator=g, dtype=dtype)).requires_grad_()
    if targets == "probabilities":
        target = torch.softmax(2 * torch.randn(N, C, generator=g, dtype=dtype), dim=1)
    else:
        target = torch.tensor([0, 3, 1, 3, 4, 2])
    options = dict(weight=torch.rand(C, generator=g, dtype=dtype) + 0.2 if weighted else None,
                   ignore_index=3 if targets == "indices+ignored" else -100,
                   reduction=reduction, label_smoothing=label_smoothing)
    ours = cross_entropy(z, target, **options)
    theirs = F.cross_entropy(z, target, **options)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours, theirs, **tol)
    reference = ce_reference(z.detach(), target, options["weight"], options["ignore_index"], reduction, label_smoothing)
    torch.testing.assert_close(ours.double(), reference, **tol)
    upstream = torch.rand(ours.shape, generator=g, dtype=dtype)
    (grad_ours,) = torch.autograd.grad(ours, z, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, z, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, **tol)


@given(N=st.integers(1, 10), C=st.integers(2, 8), seed=st.integers(0, 2**16))
def test_cross_entropy_gradient_is_softmax_minus_onehot_over_N(N, C, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, C, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, C, (N,), generator=g)
    cross_entropy(z, target).backward()
    expected = (torch.softmax(z.detach(), dim=1) - F.one_hot(target, C).double()) / N
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)


def test_cross_entropy_gradcheck_with_weights_smoothing_and_ignored_rows():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 1, 1])
    weight = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a: cross_entropy(a, target, weight=weight, ignore_index=1, reduction=reduction,
                                    label_smoothing=0.2), (z,))


@pytest.mark.parametrize("C", [2, 10, 1000])
def test_uniform_logits_give_log_C(C):
    loss = cross_entropy(torch.zeros(5, C, dtype=torch.float64), torch.arange(5) % C)
    assert loss.item() == pytest.approx(math.log(C), rel=1e-14)


def test_label_smoothing_without_weights_is_cross_entropy_against_the_smoothed_target():
    g = torch.Generator().manual_seed(4)
    z, target, eps = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g), 0.2
    smoothed = (1 - eps) * F.one_hot(target, 5).double() + eps / 5
    torch.testing.assert_close(cross_entropy(z, target, label_smoothing=eps), cross_entropy(z, smoothed),
                               rtol=1e-12, atol=1e-14)
    # its minimiser is q = (1 - eps + eps/C, eps/C, ...)
    best = torch.log(torch.tensor([[1 - eps + eps / 5] + [eps / 5] * 4], dtype=torch.float64))
    value = cross_entropy(best, [0], label_smoothing=eps).item()
    for _ in range(20):
        other = best + 0.05 * torch.randn(1, 5, generator=g, dtype=torch.float64)
        assert cross_entropy(other, [0], label_smoothing=eps).item() >= value


def test_label_smoothing_with_weights_follows_torch_not_the_weighted_soft_target():
    # torch: (1-eps) w[y] nll + (eps/C) sum_c w_c (-log q_c), both over sum of w[y_n]  (issue #104776)
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
    target, weight, eps = torch.tensor([0, 1]), torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64), 0.3
    ours = cross_entropy(z, target, weight=weight, label_smoothing=eps)
    torch.testing.assert_close(ours, F.cross_entropy(z, target, weight=weight, label_smoothing=eps), rtol=1e-12, atol=0)
    log_q = torch.log_softmax(z, dim=1)
    by_hand = (((1 - eps) * weight[target] * -log_q[[0, 1], target]).sum()
               + (eps / 3) * (-(log_q * weight).sum())) / weight[target].sum()
    torch.testing.assert_close(ours, by_hand, rtol=1e-12, atol=0)
    soft = (1 - eps) * F.one_hot(target, 3).double() + eps / 3
    assert abs(ours.item() - cross_entropy(z, soft, weight=weight).item()) > 1e-3


def test_ignored_rows_give_zero_and_are_left_out_of_the_weighted_mean():
    z = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    target, weight = torch.tensor([2, -100, 0]), torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    none = cross_entropy(z, target, weight=weight, reduction="none")
    assert none[1].item() == 0.0
    mean = cross_entropy(z, target, weight=weight)
    assert mean.item() == pytest.approx((none.sum() / (weight[2] + weight[0])).item(), rel=1e-14)


@pytest.mark.parametrize("options", [dict(ignore_index=3), dict(), dict(weight=torch.zeros(4))])
def test_mean_of_nothing_raises_instead_of_returning_nan(options):
    target = torch.full((3,), 3) if options.get("ignore_index") == 3 else torch.tensor([0, 1, 2])
    z = torch.randn(3, 4) if options else torch.randn(0, 4)
    if not options:
        target = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="nothing to average"):
        cross_entropy(z, target, **options)
    assert cross_entropy(z, target, reduction="sum", **options).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_give_a_finite_loss_and_gradient(dtype):
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype, requires_grad=True)
    target = torch.tensor([1, 1])
    loss = cross_entropy(z, target, reduction="none")
    assert loss.tolist() == [2e4, 0.0]
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad, torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("probabilities", [False, True])
def test_half_precision_is_finite_and_close_to_the_float64_reference(dtype, probabilities):
    g = torch.Generator().manual_seed(5)
    z = (10 * torch.randn(16, 6, generator=g)).to(dtype)
    z[0, 0], z[0, 1] = 60000.0 if dtype == torch.float16 else 1e4, -60000.0 if dtype == torch.float16 else -1e4
    target = torch.softmax(torch.randn(16, 6, generator=g), 1).to(dtype) if probabilities else torch.randint(0, 6, (16,), generator=g)
    ours = cross_entropy(z, target, label_smoothing=0.1, reduction="none")
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    reference = ce_reference(z, target, reduction="none", eps=0.1)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-2, atol=1e-2 * reference.abs().max().item())


def test_one_sample_logits_of_shape_C_with_a_scalar_target():
    z = [1.0, 2.0, 3.0]
    assert cross_entropy(z, 2).dtype == torch.float64  # Python floats are doubles
    assert cross_entropy(z, 2).item() == pytest.approx(F.cross_entropy(torch.tensor(z, dtype=torch.float64), torch.tensor(2)).item())
    assert cross_entropy(z, 2, reduction="none").shape == ()
    assert cross_entropy(z, [0.2, 0.3, 0.5]).item() == pytest.approx(
        F.cross_entropy(torch.tensor(z, dtype=torch.float64), torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)).item())


def test_ignore_index_as_a_real_class_still_counts_in_the_softmax_denominator():
    z = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)
    loss = cross_entropy(torch.cat([z, z]), torch.tensor([0, 2]), ignore_index=2, reduction="none")
    assert loss[0].item() == pytest.approx(-torch.log_softmax(z, 1)[0, 0].item(), rel=1e-14)
    assert loss[1].item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_runs_on_the_device_of_its_inputs(device):
    g = torch.Generator().manual_seed(6)
    z_cpu, target_cpu = torch.randn(7, 5, generator=g), torch.randint(0, 5, (7,), generator=g)
    weight_cpu = torch.rand(5, generator=g) + 0.1
    z = z_cpu.to(device).requires_grad_()
    loss = cross_entropy(z, target_cpu.to(device), weight=weight_cpu.to(device), label_smoothing=0.1, ignore_index=4)
    assert loss.device.type == device
    loss.backward()
    expected = F.cross_entropy(z_cpu, target_cpu, weight=weight_cpu, label_smoothing=0.1, ignore_index=4)
    torch.testing.assert_close(loss.cpu(), expected, rtol=1e-5, atol=1e-6)
