"""Multiclass cross-entropy (chapter 2): every option and shape of
torch's, against the formula and torch, and the edges."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ce_lib import cross_entropy
from conftest import DEVICES

REDUCTIONS = ["none", "mean", "sum"]


# ---- the reference: torch's documented semantics, written out position
# by position in float64, with 0 log 0 = 0 ----


def log_softmax_reference(z: torch.Tensor) -> torch.Tensor:
    z = z.double()
    m = z.max(dim=1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(dim=1, keepdim=True))


def ce_reference(
    z, target, weight=None, ignore_index=-100, reduction="mean", eps=0.0
):
    """l_n = -(1-eps) w[y_n] log q[n, y_n] - (eps/C) sum_c w_c log q[n, c];
    mean divides by the sum of w[y_n].

    With probabilities: l_n = -sum_c w_c ((1-eps) p_nc + eps/C) log q_nc;
    mean divides by N d1...dK. A term whose coefficient is 0 is 0
    (0 log 0 = 0). Positions are the rows of (N, C, d1..dK)
    with the class axis moved last.
    """
    C = z.shape[1]
    out_shape = (z.shape[0],) + tuple(z.shape[2:])
    log_q = log_softmax_reference(z.movedim(1, -1).reshape(-1, C))
    rows = (
        target.movedim(1, -1).reshape(-1, C)
        if target.is_floating_point()
        else target.reshape(-1)
    )
    w = [1.0] * C if weight is None else weight.double().tolist()

    def term(a: float, log_p: float) -> float:
        return 0.0 if a == 0 else -a * log_p

    losses, denominator = [], 0.0
    for n in range(log_q.shape[0]):
        lq = log_q[n].tolist()
        if target.is_floating_point():
            p = [(1 - eps) * x + eps / C for x in rows[n].double().tolist()]
            losses.append(sum(term(w[c] * p[c], lq[c]) for c in range(C)))
            denominator += 1
        elif rows[n] == ignore_index:
            losses.append(0.0)
        else:
            y = int(rows[n])
            losses.append(
                term((1 - eps) * w[y], lq[y])
                + sum(term(eps / C * w[c], lq[c]) for c in range(C))
            )
            denominator += w[y]
    losses = torch.tensor(losses, dtype=torch.float64).reshape(out_shape)
    if reduction == "none":
        return losses
    return losses.sum() / denominator if reduction == "mean" else losses.sum()


@st.composite
def problems(draw):
    """A random batch of shape (N, C, d1..dK), target kind, every option of
    cross_entropy, and
    sometimes masked (-inf) or +inf logits."""
    N, C = draw(st.integers(1, 9)), draw(st.integers(2, 7))
    spatial = tuple(
        draw(
            st.lists(
                st.integers(1, 3), max_size=draw(st.sampled_from([0, 0, 2]))
            )
        )
    )
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    z = draw(st.sampled_from([1.0, 5.0, 30.0])) * torch.randn(
        N, C, *spatial, generator=g, dtype=dtype
    )
    special = draw(st.sampled_from([None, None, "-inf", "-inf", "+inf"]))
    if special is not None:
        where = torch.rand(z.shape, generator=g) < 0.3
        where[:, 0] = False  # -inf never masks every class
        z = z.masked_fill(
            where, -torch.inf if special == "-inf" else torch.inf
        )
    probabilities = draw(st.booleans())
    ignore_index = -100
    if probabilities:
        target = torch.softmax(
            3 * torch.randn(N, C, *spatial, generator=g, dtype=dtype), dim=1
        )
    else:
        target = torch.randint(0, C, (N, *spatial), generator=g)
        if draw(
            st.booleans()
        ):  # ignore a real class, sometimes at several positions
            ignore_index = draw(st.integers(0, C - 1))
    weight = (
        2 * torch.rand(C, generator=g, dtype=dtype) + 0.1
        if draw(st.booleans())
        else None
    )
    if weight is not None and draw(st.booleans()):
        weight[-1] = 0.0  # a zero weight, sometimes next to a -inf logit
    eps = draw(st.sampled_from([0.0, 0.0, 0.1, 0.35, 1.0]))
    reduction = draw(st.sampled_from(REDUCTIONS))
    return (
        z,
        target,
        dict(
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=eps,
        ),
    )


def _nothing_to_average(target, options) -> bool:
    if options["reduction"] != "mean" or target.is_floating_point():
        return False
    kept = target != options["ignore_index"]
    w = options["weight"]
    return not kept.any() or (w is not None and w[target[kept]].sum() == 0)


def _plus_inf_counts(z, target, options) -> bool:
    """A +inf logit at a position that is not ignored (NaN in torch)."""
    rows = torch.isposinf(z).any(dim=1)
    if not target.is_floating_point():
        rows &= target != options["ignore_index"]
    return bool(rows.any())


@given(problem=problems())
def test_cross_entropy_matches_the_formula_for_every_option(problem):
    z, target, options = problem
    if _plus_inf_counts(z, target, options):
        with pytest.raises(ValueError, match=r"logits must not contain \+inf"):
            cross_entropy(z, target, **options)
        return
    if _nothing_to_average(target, options):
        with pytest.raises(ValueError, match="nothing to average"):
            cross_entropy(z, target, **options)
        return
    ours = cross_entropy(z, target, **options)
    assert ours.dtype == z.dtype
    reference = ce_reference(
        z,
        target,
        options["weight"],
        options["ignore_index"],
        options["reduction"],
        options["label_smoothing"],
    )
    tol = (
        dict(rtol=2e-6, atol=2e-6)
        if z.dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-10)
    )
    torch.testing.assert_close(ours.double(), reference, **tol)


@given(problem=problems())
def test_cross_entropy_and_its_gradient_match_torch_for_every_option(problem):
    z, target, options = problem
    theirs_value = F.cross_entropy(z, target, **options)
    if _nothing_to_average(target, options) or _plus_inf_counts(
        z, target, options
    ):
        assert torch.isnan(
            theirs_value
        ).any()  # torch's silent NaN; ours raises (above)
        return
    if torch.isnan(
        theirs_value
    ).any():  # torch: 0 * log 0 = NaN; ours: 0 (above)
        assert not torch.isnan(cross_entropy(z, target, **options)).any()
        return
    z = z.clone().requires_grad_()
    ours = cross_entropy(z, target, **options)
    theirs = F.cross_entropy(z, target, **options)
    tol = (
        dict(rtol=1e-6, atol=1e-6)
        if z.dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-10)
    )
    torch.testing.assert_close(ours, theirs, **tol)
    upstream = torch.rand(ours.shape, dtype=z.dtype)
    upstream = torch.where(
        torch.isfinite(theirs), upstream, 0
    )  # an inf loss has no finite gradient
    (grad_ours,) = torch.autograd.grad(ours, z, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, z, upstream)
    torch.testing.assert_close(grad_ours, grad_theirs, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25, 1.0])
@pytest.mark.parametrize(
    "weighted", [False, True], ids=["unweighted", "weighted"]
)
@pytest.mark.parametrize(
    "targets", ["indices", "indices+ignored", "probabilities"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_combination_of_options_matches_torch_and_the_formula(
    dtype, targets, weighted, label_smoothing, reduction
):
    g = torch.Generator().manual_seed(7)
    N, C = 6, 5
    z = (3 * torch.randn(N, C, generator=g, dtype=dtype)).requires_grad_()
    if targets == "probabilities":
        target = torch.softmax(
            2 * torch.randn(N, C, generator=g, dtype=dtype), dim=1
        )
    else:
        target = torch.tensor([0, 3, 1, 3, 4, 2])
    options = dict(
        weight=torch.rand(C, generator=g, dtype=dtype) + 0.2
        if weighted
        else None,
        ignore_index=3 if targets == "indices+ignored" else -100,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    ours = cross_entropy(z, target, **options)
    theirs = F.cross_entropy(z, target, **options)
    tol = (
        dict(rtol=1e-6, atol=1e-6)
        if dtype == torch.float32
        else dict(rtol=1e-10, atol=1e-10)
    )
    torch.testing.assert_close(ours, theirs, **tol)
    reference = ce_reference(
        z.detach(),
        target,
        options["weight"],
        options["ignore_index"],
        reduction,
        label_smoothing,
    )
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
    expected = (
        torch.softmax(z.detach(), dim=1) - F.one_hot(target, C).double()
    ) / N
    torch.testing.assert_close(z.grad, expected, rtol=1e-12, atol=1e-14)


def test_cross_entropy_gradcheck_with_weights_smoothing_and_ignored_rows():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 1, 1])
    weight = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, reduction=reduction: cross_entropy(
                a,
                target,
                weight=weight,
                ignore_index=1,
                reduction=reduction,
                label_smoothing=0.2,
            ),
            (z,),
            fast_mode=True,
        )


@pytest.mark.parametrize("C", [2, 10, 1000])
def test_uniform_logits_give_log_C(C):
    loss = cross_entropy(
        torch.zeros(5, C, dtype=torch.float64), torch.arange(5) % C
    )
    assert loss.item() == pytest.approx(math.log(C), rel=1e-14)


def test_smoothing_without_weights_is_ce_against_the_smoothed_target():
    g = torch.Generator().manual_seed(4)
    z, target, eps = (
        torch.randn(8, 5, generator=g, dtype=torch.float64),
        torch.randint(0, 5, (8,), generator=g),
        0.2,
    )
    smoothed = (1 - eps) * F.one_hot(target, 5).double() + eps / 5
    torch.testing.assert_close(
        cross_entropy(z, target, label_smoothing=eps),
        cross_entropy(z, smoothed),
        rtol=1e-12,
        atol=1e-14,
    )
    # its minimiser is q = (1 - eps + eps/C, eps/C, ...)
    best = torch.log(
        torch.tensor(
            [[1 - eps + eps / 5] + [eps / 5] * 4], dtype=torch.float64
        )
    )
    value = cross_entropy(best, [0], label_smoothing=eps).item()
    for _ in range(20):
        other = best + 0.05 * torch.randn(
            1, 5, generator=g, dtype=torch.float64
        )
        assert cross_entropy(other, [0], label_smoothing=eps).item() >= value


def test_smoothing_with_weights_follows_torch_not_the_weighted_soft_target():
    # torch: (1-eps) w[y] nll + (eps/C) sum_c w_c (-log q_c), both over the
    # sum of w[y_n] (issue #104776)
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
    target, weight, eps = (
        torch.tensor([0, 1]),
        torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64),
        0.3,
    )
    ours = cross_entropy(z, target, weight=weight, label_smoothing=eps)
    torch.testing.assert_close(
        ours,
        F.cross_entropy(z, target, weight=weight, label_smoothing=eps),
        rtol=1e-12,
        atol=0,
    )
    log_q = torch.log_softmax(z, dim=1)
    by_hand = (
        ((1 - eps) * weight[target] * -log_q[[0, 1], target]).sum()
        + (eps / 3) * (-(log_q * weight).sum())
    ) / weight[target].sum()
    torch.testing.assert_close(ours, by_hand, rtol=1e-12, atol=0)
    soft = (1 - eps) * F.one_hot(target, 3).double() + eps / 3
    assert (
        abs(ours.item() - cross_entropy(z, soft, weight=weight).item()) > 1e-3
    )


def test_ignored_rows_give_zero_and_are_left_out_of_the_weighted_mean():
    z = torch.tensor(
        [[1.0, 2.0, 3.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0]],
        dtype=torch.float64,
    )
    target, weight = (
        torch.tensor([2, -100, 0]),
        torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64),
    )
    none = cross_entropy(z, target, weight=weight, reduction="none")
    assert none[1].item() == 0.0
    mean = cross_entropy(z, target, weight=weight)
    assert mean.item() == pytest.approx(
        (none.sum() / (weight[2] + weight[0])).item(), rel=1e-14
    )


@pytest.mark.parametrize(
    "options", [dict(ignore_index=3), dict(), dict(weight=torch.zeros(4))]
)
def test_mean_of_nothing_raises_instead_of_returning_nan(options):
    target = (
        torch.full((3,), 3)
        if options.get("ignore_index") == 3
        else torch.tensor([0, 1, 2])
    )
    z = torch.randn(3, 4) if options else torch.randn(0, 4)
    if not options:
        target = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="nothing to average"):
        cross_entropy(z, target, **options)
    assert cross_entropy(z, target, reduction="sum", **options).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_give_a_finite_loss_and_gradient(dtype):
    z = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], dtype=dtype, requires_grad=True
    )
    target = torch.tensor([1, 1])
    loss = cross_entropy(z, target, reduction="none")
    assert loss.tolist() == [2e4, 0.0]
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(
        z.grad, torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("probabilities", [False, True])
def test_half_precision_is_finite_and_close_to_the_float64_reference(
    dtype, probabilities
):
    g = torch.Generator().manual_seed(5)
    z = (10 * torch.randn(16, 6, generator=g)).to(dtype)
    z[0, 0], z[0, 1] = (
        60000.0 if dtype == torch.float16 else 1e4,
        -60000.0 if dtype == torch.float16 else -1e4,
    )
    target = (
        torch.softmax(torch.randn(16, 6, generator=g), 1).to(dtype)
        if probabilities
        else torch.randint(0, 6, (16,), generator=g)
    )
    ours = cross_entropy(z, target, label_smoothing=0.1, reduction="none")
    assert ours.dtype == dtype and torch.isfinite(ours).all()
    reference = ce_reference(z, target, reduction="none", eps=0.1)
    torch.testing.assert_close(
        ours.double(),
        reference,
        rtol=1e-2,
        atol=1e-2 * reference.abs().max().item(),
    )


def test_one_sample_logits_of_shape_C_with_a_scalar_target():
    z = [1.0, 2.0, 3.0]
    assert (
        cross_entropy(z, 2).dtype == torch.float64
    )  # Python floats are doubles
    assert cross_entropy(z, 2).item() == pytest.approx(
        F.cross_entropy(
            torch.tensor(z, dtype=torch.float64), torch.tensor(2)
        ).item()
    )
    assert cross_entropy(z, 2, reduction="none").shape == ()
    assert cross_entropy(z, [0.2, 0.3, 0.5]).item() == pytest.approx(
        F.cross_entropy(
            torch.tensor(z, dtype=torch.float64),
            torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
        ).item()
    )


def test_ignore_index_as_a_real_class_still_counts_in_the_denominator():
    z = torch.tensor([[0.0, 0.0, 10.0]], dtype=torch.float64)
    loss = cross_entropy(
        torch.cat([z, z]),
        torch.tensor([0, 2]),
        ignore_index=2,
        reduction="none",
    )
    assert loss[0].item() == pytest.approx(
        -torch.log_softmax(z, 1)[0, 0].item(), rel=1e-14
    )
    assert loss[1].item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_runs_on_the_device_of_its_inputs(device):
    g = torch.Generator().manual_seed(6)
    z_cpu, target_cpu = (
        torch.randn(7, 5, generator=g),
        torch.randint(0, 5, (7,), generator=g),
    )
    weight_cpu = torch.rand(5, generator=g) + 0.1
    z = z_cpu.to(device).requires_grad_()
    loss = cross_entropy(
        z,
        target_cpu.to(device),
        weight=weight_cpu.to(device),
        label_smoothing=0.1,
        ignore_index=4,
    )
    assert loss.device.type == device
    loss.backward()
    z_ref = z_cpu.detach().clone().requires_grad_()
    expected = F.cross_entropy(
        z_ref,
        target_cpu,
        weight=weight_cpu,
        label_smoothing=0.1,
        ignore_index=4,
    )
    expected.backward()
    torch.testing.assert_close(
        loss.cpu(), expected.detach(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(z.grad.cpu(), z_ref.grad, rtol=1e-5, atol=1e-6)


# ---- torch's whole shape set: (N, C, d1, ..., dK) ----


@pytest.mark.parametrize(
    "spatial", [(3,), (2, 3), (2, 1, 2)], ids=["K=1", "K=2", "K=3"]
)
@pytest.mark.parametrize(
    "targets", ["indices", "indices+ignored", "probabilities"]
)
def test_every_option_on_spatial_shapes_matches_torch_values_and_gradients(
    spatial, targets
):
    g = torch.Generator().manual_seed(len(spatial))
    N, C = 2, 4
    z0 = 3 * torch.randn(N, C, *spatial, generator=g, dtype=torch.float64)
    if targets == "probabilities":
        target = torch.softmax(
            torch.randn(N, C, *spatial, generator=g, dtype=torch.float64),
            dim=1,
        )
    else:
        target = torch.randint(0, C, (N, *spatial), generator=g)
        target.view(-1)[0] = 1  # ignored below, and not everywhere
        target.view(-1)[1] = 2
    for weighted, eps, reduction in itertools.product(
        [False, True], [0.0, 0.3], REDUCTIONS
    ):
        options = dict(
            weight=torch.rand(C, generator=g, dtype=torch.float64) + 0.2
            if weighted
            else None,
            ignore_index=1 if targets == "indices+ignored" else -100,
            reduction=reduction,
            label_smoothing=eps,
        )
        z = z0.clone().requires_grad_()
        ours = cross_entropy(z, target, **options)
        theirs = F.cross_entropy(z, target, **options)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
        upstream = torch.rand(ours.shape, generator=g, dtype=torch.float64)
        (grad_ours,) = torch.autograd.grad(ours, z, upstream)
        (grad_theirs,) = torch.autograd.grad(theirs, z, upstream)
        torch.testing.assert_close(
            grad_ours, grad_theirs, rtol=1e-10, atol=1e-12
        )


def test_a_spatial_loss_is_the_loss_of_every_position_as_a_row():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(
        2, 5, 3, 4, generator=g, dtype=torch.float64
    )  # N, C, height, width
    target = torch.randint(0, 5, (2, 3, 4), generator=g)
    rows = cross_entropy(
        z.movedim(1, -1).reshape(-1, 5), target.reshape(-1), reduction="none"
    )
    torch.testing.assert_close(
        cross_entropy(z, target, reduction="none"), rows.reshape(2, 3, 4)
    )


# ---- edges found by adversarial testing ----

MASKED_ROW = [-math.inf, 0.0, 1.0]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_an_ignored_row_contributes_exactly_zero_whatever_its_logits(
    label_smoothing, reduction
):
    rows = torch.tensor(
        [[2.0, 1.0, 0.0], MASKED_ROW, [0.0, -math.inf, -math.inf]],
        dtype=torch.float64,
    )
    target = torch.tensor([0, -100, -100])
    z = rows.clone().requires_grad_()
    ours = cross_entropy(
        z, target, reduction=reduction, label_smoothing=label_smoothing
    )
    alone = cross_entropy(
        rows[:1],
        target[:1],
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(
        ours[:1] if reduction == "none" else ours, alone, rtol=0, atol=0
    )
    if reduction == "none":
        assert ours[1:].tolist() == [0.0, 0.0]
    theirs = F.cross_entropy(
        rows, target, reduction=reduction, label_smoothing=label_smoothing
    )
    torch.testing.assert_close(
        ours, theirs, rtol=1e-12, atol=0
    )  # torch is finite here too
    ours.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad[1:].abs().max() == 0
    # every logit of an ignored row -inf, or NaN: still exactly 0 in the loss
    for bad in ([-math.inf] * 3, [math.nan] * 3, [math.inf, 0.0, 0.0]):
        z = torch.tensor([[2.0, 1.0, 0.0], bad], dtype=torch.float64)
        loss = cross_entropy(
            z, target[:2], reduction=reduction, label_smoothing=label_smoothing
        )
        torch.testing.assert_close(
            loss[:1] if reduction == "none" else loss, alone, rtol=0, atol=0
        )


def test_a_zero_weight_next_to_a_masked_logit_gives_the_exact_finite_value():
    z = torch.tensor([[1.0, 2.0, -math.inf]], dtype=torch.float64)
    weight = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    log_p = torch.log_softmax(z[:, :2], dim=1)[0]  # the masked class has p = 0
    eps = 0.3
    expected = -(1 - eps) * 1.0 * log_p[0] - eps / 3 * (
        1.0 * log_p[0] + 2.0 * log_p[1]
    )  # + 0 log 0
    ours = cross_entropy(
        z, [0], weight=weight, label_smoothing=eps, reduction="sum"
    )
    assert ours.item() == pytest.approx(expected.item(), rel=1e-14)
    assert torch.isnan(
        F.cross_entropy(
            z, torch.tensor([0]), weight=weight, label_smoothing=eps
        )
    )  # torch: NaN
    # the target class itself masked, with weight 0: exactly 0
    assert cross_entropy(z, [2], weight=weight, reduction="sum").item() == 0.0


def test_a_probability_target_of_zero_on_a_masked_class_is_finite():
    z = torch.tensor(
        [[1.0, -math.inf, 0.0]], dtype=torch.float64, requires_grad=True
    )
    target = torch.tensor([[0.25, 0.0, 0.75]], dtype=torch.float64)
    loss = cross_entropy(z, target)
    log_p = torch.log_softmax(torch.tensor([1.0, 0.0], dtype=torch.float64), 0)
    assert loss.item() == pytest.approx(
        -(0.25 * log_p[0] + 0.75 * log_p[1]).item(), rel=1e-14
    )
    assert torch.isnan(F.cross_entropy(z, target))  # torch: 0 * -inf
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad[0, 1] == 0


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_nan_or_infinite_weights_raise_naming_weight_in_every_reduction(
    reduction, bad, targets
):
    weight = torch.tensor([1.0, bad, 1.0])
    target = (
        torch.tensor([0, 2])
        if targets == "indices"
        else torch.full((2, 3), 1 / 3)
    )
    with pytest.raises(
        ValueError, match=r"weight must be finite \(no NaN, no inf\)"
    ):
        cross_entropy(
            torch.zeros(2, 3), target, weight=weight, reduction=reduction
        )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_negative_weights_with_a_nonzero_sum_follow_torch(label_smoothing):
    g = torch.Generator().manual_seed(9)
    z0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1, 0])
    weight = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64)
    for reduction in REDUCTIONS:
        z = z0.clone().requires_grad_()
        ours = cross_entropy(
            z,
            target,
            weight=weight,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
        theirs = F.cross_entropy(
            z,
            target,
            weight=weight,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
        a, b = (torch.autograd.grad(x.sum(), z)[0] for x in (ours, theirs))
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_a_weight_that_requires_grad_is_differentiated_correctly(targets):
    # torch refuses it with class indices; here it gets the true derivative
    g = torch.Generator().manual_seed(10)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (
        torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    ).requires_grad_()
    target = (
        torch.tensor([0, 2, 1, 2])
        if targets == "indices"
        else torch.softmax(z.detach() * 2, 1)
    )
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, w, reduction=reduction: cross_entropy(
                a,
                target,
                weight=w,
                reduction=reduction,
                label_smoothing=0.1,
                ignore_index=1 if targets == "indices" else -100,
            ),
            (z, weight),
        )
    (grad_weight,) = torch.autograd.grad(
        cross_entropy(z, target, weight=weight, reduction="sum"), weight
    )
    assert grad_weight.abs().sum() > 0


@pytest.mark.parametrize(
    "ignore_index", [1.5, True, None, "1", torch.tensor(1)]
)
def test_ignore_index_must_be_an_integer(ignore_index):
    with pytest.raises(ValueError, match="ignore_index must be an integer"):
        cross_entropy(
            torch.zeros(2, 3), torch.tensor([0, 1]), ignore_index=ignore_index
        )


CAUSES = {
    "NaN": ([[0.0, math.nan, 1.0]], "logits must not contain NaN"),
    "+inf": (
        [[0.0, math.inf, 1.0]],
        r"logits must not contain \+inf \(-inf is allowed",
    ),
    "all -inf": ([[-math.inf] * 3], "logits must not be -inf for every class"),
}


@pytest.mark.parametrize("rows, message", CAUSES.values(), ids=CAUSES.keys())
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
def test_a_nan_loss_raises_naming_its_real_cause(rows, message, targets):
    z = torch.tensor([[1.0, 2.0, 3.0], *rows])
    target = (
        torch.tensor([0, 1])
        if targets == "indices"
        else torch.full((2, 3), 1 / 3)
    )
    for reduction in REDUCTIONS:
        with pytest.raises(ValueError, match=message):
            cross_entropy(z, target, reduction=reduction)
    # and a NaN or +inf in an ignored row does not reach the loss: no error
    if targets == "indices":
        cross_entropy(z, torch.tensor([0, -100]))


@pytest.mark.parametrize(
    "case, why",
    [
        ("empty", "the batch is empty"),
        ("all ignored", "every target is ignore_index"),
        ("weights sum to 0", "the weights of the targets sum to 0"),
    ],
)
def test_mean_of_nothing_says_why(case, why):
    z, target, weight = torch.randn(3, 4), torch.tensor([0, 1, 2]), None
    if case == "empty":
        z, target = torch.randn(0, 4), torch.zeros(0, dtype=torch.long)
    elif case == "all ignored":
        target = torch.full((3,), -100)
    else:
        weight = torch.tensor([1.0, -1.0, 0.0, 5.0])
    with pytest.raises(ValueError, match=f"nothing to average: {why}"):
        cross_entropy(z, target, weight=weight)


@pytest.mark.parametrize("device", DEVICES)
def test_spatial_and_probability_targets_on_the_device_match_the_cpu(
    device,
):
    g = torch.Generator().manual_seed(12)
    z_cpu = torch.randn(2, 4, 3, generator=g).masked_fill(
        torch.rand(2, 4, 3, generator=g) < 0.2, -math.inf
    )
    z_cpu[:, 0] = 0.0
    targets = [
        torch.zeros(2, 3, dtype=torch.long),
        torch.softmax(torch.randn(2, 4, 3, generator=g), 1),
    ]
    for target in targets:
        target = (
            target.masked_fill(torch.isneginf(z_cpu), 0)
            if target.is_floating_point()
            else target
        )
        grads = []
        for dev in ("cpu", device):
            z = z_cpu.to(dev).requires_grad_()
            loss = cross_entropy(
                z, target.to(dev), label_smoothing=0.0, reduction="sum"
            )
            loss.backward()
            grads.append((loss.cpu(), z.grad.cpu()))
        torch.testing.assert_close(
            grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            grads[1][1], grads[0][1], rtol=1e-5, atol=1e-6
        )


def test_inf_minus_inf_from_weights_of_both_signs_says_so():
    z = torch.tensor([[0.0, -math.inf, -math.inf, 1.0]])
    weight = torch.tensor([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="inf - inf, where weights of both"):
        cross_entropy(z, [0], weight=weight, label_smoothing=0.1)
