"""The fast paths held to ce_lib.reference, the formula-shaped versions the
book shows: the same values, gradients and second derivatives, on random
problems with masked (-inf) logits, and the reference itself against torch."""

import subprocess
import sys

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ce_lib import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    distribution_focal_loss,
    integral,
    reference,
    two_hot,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-10}


def derivatives(loss_fn, x, g):
    """The loss, its vector-Jacobian product with random weights, and a
    Hessian-vector product, all in x."""
    x = x.detach().clone().requires_grad_()
    loss = loss_fn(x)
    finite = torch.isfinite(loss)
    upstream = torch.where(finite, torch.rand(loss.shape, generator=g), 0)
    (first,) = torch.autograd.grad(
        (loss * upstream).nansum(), x, create_graph=True
    )
    v = torch.randn(x.shape, generator=g, dtype=x.dtype)
    if not first.requires_grad:  # the loss is linear in x
        return loss.detach(), first.detach(), torch.zeros_like(x)
    (second,) = torch.autograd.grad(
        (first * v).sum(), x, allow_unused=True, materialize_grads=True
    )
    return loss.detach(), first.detach(), second


def assert_same_derivatives(ours, theirs, x, seed, tol=TIGHT):
    a = derivatives(ours, x, torch.Generator().manual_seed(seed))
    b = derivatives(theirs, x, torch.Generator().manual_seed(seed))
    for what, u, v in zip(("value", "gradient", "hvp"), a, b, strict=True):
        torch.testing.assert_close(u, v, **tol, msg=what)


@st.composite
def ce_problems(draw):
    """Logits (N, C, d1..dK) with some masked classes, a target of either
    kind, and every option."""
    N, C = draw(st.integers(1, 5)), draw(st.integers(2, 6))
    spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    z = 3 * torch.randn(N, C, *spatial, generator=g, dtype=torch.float64)
    masked = torch.rand(z.shape, generator=g) < draw(
        st.sampled_from([0.0, 0.3])
    )
    masked[:, 0] = False  # every position keeps a class
    z = z.masked_fill(masked, -torch.inf)
    weight = None
    if draw(st.booleans()):
        weight = torch.rand(C, generator=g, dtype=torch.float64) + 0.1
        weight[-1] = draw(st.sampled_from([0.0, 1.0]))  # 0 next to -inf
    eps = draw(st.sampled_from([0.0, 0.2, 1.0]))
    if draw(st.booleans()):  # probabilities, zero where the class is masked
        target = torch.rand(z.shape, generator=g, dtype=torch.float64)
        target = target.masked_fill(masked, 0)
        target = target / target.sum(1, keepdim=True)
        ignore_index = -100
        eps = 0.0 if masked.any() else eps  # smoothing would put mass there
    else:  # the first class: never masked; some positions ignored
        target = torch.zeros((N, *spatial), dtype=torch.long)
        target = target.masked_fill(torch.rand(target.shape) < 0.3, -100)
        ignore_index = -100
        if eps > 0 and (weight is None or weight[-1] > 0):
            z = z.masked_fill(masked, -50.0)  # smoothing needs every class
    return z, target, weight, ignore_index, eps


@given(problem=ce_problems(), seed=st.integers(0, 2**16))
def test_cross_entropy_has_the_derivatives_of_the_reference(problem, seed):
    z, target, weight, ignore_index, eps = problem
    kept = None if target.is_floating_point() else (target != ignore_index)

    def ours(a):
        return cross_entropy(
            a, target, weight, ignore_index, "none", label_smoothing=eps
        )

    def theirs(a):  # the reference has the class axis last
        t = target.movedim(1, -1) if kept is None else target.clamp(min=0)
        loss = reference.cross_entropy(a.movedim(1, -1), t, weight, eps)
        return loss if kept is None else torch.where(kept, loss, 0.0)

    assert_same_derivatives(ours, theirs, z, seed)


@given(problem=ce_problems())
def test_the_reference_cross_entropy_equals_torchs_where_torch_is_finite(
    problem,
):
    z, target, weight, ignore_index, eps = problem
    z = z.clamp(min=-50.0)  # torch gives NaN for 0 log 0
    kept = target.clamp(min=0) if not target.is_floating_point() else target
    theirs = F.cross_entropy(
        z, kept, weight, reduction="none", label_smoothing=eps
    )
    ref = reference.cross_entropy(
        z.movedim(1, -1),
        kept if not target.is_floating_point() else kept.movedim(1, -1),
        weight,
        eps,
    )
    torch.testing.assert_close(ref, theirs, **TIGHT)


@given(
    shape=st.lists(st.integers(1, 4), max_size=2).map(tuple),
    seed=st.integers(0, 2**16),
    hard=st.booleans(),
)
def test_binary_cross_entropy_has_the_derivatives_of_the_reference(
    shape, seed, hard
):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(shape, generator=g, dtype=torch.float64)
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    if hard:
        y = y.round()
    assert_same_derivatives(
        lambda a: binary_cross_entropy(a, y, "none"),
        lambda a: reference.binary_cross_entropy(a, y),
        p,
        seed,
    )


@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1.0, 30.0]),
    weighted=st.booleans(),
)
def test_bce_with_logits_has_the_derivatives_of_the_reference(
    shape, seed, scale, weighted
):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    w = torch.rand(shape[-1:], generator=g, dtype=torch.float64) + 0.5
    w = w if weighted else None
    assert_same_derivatives(
        lambda a: binary_cross_entropy_with_logits(a, y, "none", w),
        lambda a: reference.binary_cross_entropy_with_logits(a, y, w),
        z,
        seed,
    )
    # and in y and in pos_weight
    assert_same_derivatives(
        lambda b: binary_cross_entropy_with_logits(z, b, "none", w),
        lambda b: reference.binary_cross_entropy_with_logits(z, b, w),
        y,
        seed,
    )
    if weighted:
        assert_same_derivatives(
            lambda c: binary_cross_entropy_with_logits(z, y, "none", c),
            lambda c: reference.binary_cross_entropy_with_logits(z, y, c),
            w,
            seed,
        )


@given(weighted=st.booleans(), seed=st.integers(0, 2**16))
def test_bce_with_logits_derivatives_equal_torchs_at_the_kink_z_0(
    weighted, seed
):
    """z = 0 exactly, where max(z, 0) and |z| have kinks: a formula built
    from them gets the derivative of log sigma wrong there (1, not 1/2)."""
    z = torch.tensor([0.0, -0.0, 1e-300, -1e-300, 0.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.25], dtype=torch.float64)
    w = torch.tensor([2.5], dtype=torch.float64) if weighted else None

    def torchs(a):
        return F.binary_cross_entropy_with_logits(
            a, y, reduction="none", pos_weight=w
        )

    for ours in (
        lambda a: binary_cross_entropy_with_logits(a, y, "none", w),
        lambda a: reference.binary_cross_entropy_with_logits(a, y, w),
    ):
        assert_same_derivatives(ours, torchs, z, seed)


@st.composite
def dfl_problems(draw):
    batch = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    K = draw(st.integers(2, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        steps = 0.3 + 2 * torch.rand(K, generator=g, dtype=torch.float64)
        bins = torch.cumsum(steps, 0) - 1.0
    else:
        bins = None
    positions = torch.arange(K, dtype=torch.float64) if bins is None else bins
    u = torch.rand(batch, generator=g, dtype=torch.float64)
    y = positions[0] + u * (positions[-1] - positions[0])
    y.view(-1)[0] = positions[draw(st.integers(0, K - 1))]  # on a bin
    z = 3 * torch.randn(*batch, K, generator=g, dtype=torch.float64)
    if draw(st.booleans()):  # mask every bin that carries no mass
        mass = reference.two_hot(y, positions) > 0
        z = z.masked_fill(~mass, -torch.inf)
    return z, y, bins, positions


@given(problem=dfl_problems(), seed=st.integers(0, 2**16))
def test_dfl_has_the_derivatives_of_the_reference(problem, seed):
    z, y, bins, positions = problem
    assert_same_derivatives(
        lambda a: distribution_focal_loss(a, y, bins, "none"),
        lambda a: reference.distribution_focal_loss(a, y, positions),
        z,
        seed,
    )
    assert_same_derivatives(  # in y
        lambda b: distribution_focal_loss(z, b, bins, "none"),
        lambda b: reference.distribution_focal_loss(z, b, positions),
        y,
        seed,
    )


@given(problem=dfl_problems(), seed=st.integers(0, 2**16))
def test_two_hot_and_integral_have_the_derivatives_of_the_reference(
    problem, seed
):
    z, y, bins, positions = problem
    K = positions.numel()
    spec = K if bins is None else bins
    assert_same_derivatives(
        lambda b: two_hot(b, spec),
        lambda b: reference.two_hot(b, positions),
        y,
        seed,
    )
    z = z.clamp(min=-50.0)  # a finite softmax everywhere
    assert_same_derivatives(
        lambda a: integral(a, spec),
        lambda a: reference.integral(a, positions),
        z,
        seed,
    )


def test_import_ce_lib_does_not_import_matplotlib():
    code = "import sys, ce_lib; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
