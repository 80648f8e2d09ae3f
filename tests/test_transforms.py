"""Every loss under every autograd transform: torch.func.grad, per-sample
gradients with vmap(grad), forward mode, and second derivatives (Hessian-
vector products, gradient penalties, a meta-gradient), against torch's own
losses (or plain autograd of the formula, for the DFL), in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, hessian, jacfwd, vmap

import ce_lib
from ce_lib import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    distribution_focal_loss,
    reference,
)

TIGHT = {"rtol": 1e-10, "atol": 1e-12}
G = torch.Generator().manual_seed(11)
N, C = 6, 5
Z = 2 * torch.randn(N, C, generator=G, dtype=torch.float64)
T = torch.tensor([0, 4, 2, 2, 1, 3])
P = torch.softmax(torch.randn(N, C, generator=G, dtype=torch.float64), 1)
W = torch.rand(C, generator=G, dtype=torch.float64) + 0.5
Y = torch.rand(N, C, generator=G, dtype=torch.float64)
Y_DFL = (C - 1) * torch.rand(N, generator=G, dtype=torch.float64)
BINS = torch.tensor([-1.0, 0.0, 0.5, 2.0, 4.0], dtype=torch.float64)
Y_BINS = -1 + 5 * torch.rand(N, generator=G, dtype=torch.float64)


def detector_dfl(z, y, reduction="mean"):
    """DFL as GFL and mmdetection write it, from torch's cross_entropy."""
    left = y.detach().floor().long().clamp(max=z.shape[-1] - 2)
    right = left + 1
    loss = F.cross_entropy(z, left, reduction="none") * (right - y)
    loss = loss + F.cross_entropy(z, right, reduction="none") * (y - left)
    return loss.mean() if reduction == "mean" else loss.sum()


def dfl_formula(z, y, bins=None, reduction="mean"):
    """Plain autograd of the GFL formula (ce_lib.reference)."""
    loss = reference.distribution_focal_loss(z, y, bins)
    return loss.mean() if reduction == "mean" else loss.sum()


# name -> (ce_lib's loss of the logits, the same loss by torch or formula)
PAIRS = {
    "ce indices, weight, smoothing, ignored": (
        lambda z: cross_entropy(
            z, T, weight=W, ignore_index=2, label_smoothing=0.3
        ),
        lambda z: F.cross_entropy(
            z, T, weight=W, ignore_index=2, label_smoothing=0.3
        ),
    ),
    "ce probabilities, weight, smoothing, sum": (
        lambda z: cross_entropy(
            z, P, weight=W, label_smoothing=0.1, reduction="sum"
        ),
        lambda z: F.cross_entropy(
            z, P, weight=W, label_smoothing=0.1, reduction="sum"
        ),
    ),
    "ce (N, C, d1, d2)": (
        lambda z: cross_entropy(z.reshape(1, N, C, 1), T[None, :C, None]),
        lambda z: F.cross_entropy(z.reshape(1, N, C, 1), T[None, :C, None]),
    ),
    "bce": (
        lambda z: binary_cross_entropy(torch.sigmoid(z), Y),
        lambda z: F.binary_cross_entropy(torch.sigmoid(z), Y),
    ),
    "bce with logits, pos_weight": (
        lambda z: binary_cross_entropy_with_logits(z, Y, pos_weight=W),
        lambda z: F.binary_cross_entropy_with_logits(z, Y, pos_weight=W),
    ),
    "bce with logits, sum": (
        lambda z: binary_cross_entropy_with_logits(z, Y, "sum"),
        lambda z: F.binary_cross_entropy_with_logits(z, Y, reduction="sum"),
    ),
    "dfl": (
        lambda z: distribution_focal_loss(z, Y_DFL),
        lambda z: detector_dfl(z, Y_DFL),
    ),
    "dfl, bins, sum": (
        lambda z: distribution_focal_loss(z, Y_BINS, BINS, "sum"),
        lambda z: dfl_formula(z, Y_BINS, BINS, "sum"),
    ),
}


@pytest.mark.parametrize("ours, theirs", PAIRS.values(), ids=PAIRS.keys())
def test_func_grad_equals_the_gradient_of_torchs_loss(ours, theirs):
    torch.testing.assert_close(grad(ours)(Z), grad(theirs)(Z), **TIGHT)


@pytest.mark.parametrize("ours, theirs", PAIRS.values(), ids=PAIRS.keys())
def test_hessian_vector_products_equal_torchs(ours, theirs):
    # the loss is the root and only the logits require grad: the case that
    # a once-differentiable backward silently gets wrong
    v = torch.randn(N, C, generator=G, dtype=torch.float64)
    products = []
    for loss_fn in (ours, theirs):
        z = Z.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss_fn(z), z, create_graph=True)
        (hv,) = torch.autograd.grad(g, z, v)
        products.append(hv)
    assert products[1].abs().max() > 1e-3  # a product worth comparing
    # torch's BCE from probabilities divides by p (1 - p) with 1 - p rounded
    # (ce_lib takes log1p(-p)): near p = 1 the two differ in the 9th digit
    tol = {"rtol": 1e-8, "atol": 1e-11} if ours is PAIRS["bce"][0] else TIGHT
    torch.testing.assert_close(products[0], products[1], **tol)


@pytest.mark.parametrize("ours, theirs", PAIRS.values(), ids=PAIRS.keys())
def test_forward_over_reverse_hessians_equal_torchs(ours, theirs):
    z = Z[:2, :4].contiguous()  # small: the Hessian is 64 numbers

    def pad(f):
        return lambda a: f(torch.cat([torch.cat([a, Z[:2, 4:]], 1), Z[2:]]))

    torch.testing.assert_close(
        hessian(pad(ours))(z), hessian(pad(theirs))(z), **TIGHT
    )


@pytest.mark.parametrize("ours, theirs", PAIRS.values(), ids=PAIRS.keys())
def test_gradient_penalty_on_the_inputs_of_a_linear_model(ours, theirs):
    # d/dW [loss + ||d loss / dx||^2] for z = x W^T + b: second derivatives
    # of the loss, mixed with the model's
    x0 = torch.randn(N, 3, generator=G, dtype=torch.float64)
    W0 = torch.randn(C, 3, generator=G, dtype=torch.float64)
    b0 = torch.randn(C, generator=G, dtype=torch.float64)
    grads = []
    for loss_fn in (ours, theirs):
        x = x0.clone().requires_grad_()
        W_, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
        loss = loss_fn(x @ W_.T + b)
        (dx,) = torch.autograd.grad(loss, x, create_graph=True)
        grads.append(torch.autograd.grad(loss + dx.pow(2).sum(), (W_, b)))
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


def test_a_meta_gradient_through_one_inner_step_equals_torchs():
    # MAML: adapt W with one gradient step, differentiate the loss after it
    # with respect to the initial W
    x = torch.randn(N, 3, generator=G, dtype=torch.float64)
    W0 = torch.randn(C, 3, generator=G, dtype=torch.float64)
    results = []
    for ce in (cross_entropy, F.cross_entropy):
        W_ = W0.clone().requires_grad_()
        (g,) = torch.autograd.grad(
            ce(x @ W_.T, T, label_smoothing=0.1), W_, create_graph=True
        )
        adapted = W_ - 0.5 * g
        results.append(torch.autograd.grad(ce(x @ adapted.T, T), W_)[0])
    torch.testing.assert_close(results[0], results[1], **TIGHT)


def test_gradgradcheck_of_bce_with_logits_in_z_y_and_pos_weight():
    z = torch.randn(4, 3, generator=G, dtype=torch.float64)
    y = torch.rand(4, 3, generator=G, dtype=torch.float64)
    w = torch.rand(3, generator=G, dtype=torch.float64) + 0.5
    for reduction in ("none", "mean"):
        inputs = tuple(t.clone().requires_grad_() for t in (z, y, w))

        def loss(a, b, c, reduction=reduction):
            return binary_cross_entropy_with_logits(a, b, reduction, c)

        assert torch.autograd.gradgradcheck(loss, inputs)
        assert torch.autograd.gradcheck(
            loss, inputs, check_forward_ad=True, check_backward_ad=False
        )


def test_forward_mode_jacobians_in_y_and_pos_weight_equal_reverse_mode():
    w = W[:C]
    for arg in (1, 2):

        def loss(t, arg=arg):
            args = [Z, Y, w]
            args[arg] = t
            z, y, pos_weight = args
            return binary_cross_entropy_with_logits(z, y, "none", pos_weight)

        x = (Z, Y, w)[arg]
        torch.testing.assert_close(
            jacfwd(loss)(x), torch.func.jacrev(loss)(x), **TIGHT
        )


# ---- per-sample gradients: vmap(grad(loss of one sample)), validation off

ONE_SAMPLE = {
    # name -> (loss of one sample from its logits and target, targets)
    "cross_entropy": (
        lambda z, t: cross_entropy(z, t, weight=W, label_smoothing=0.2),
        lambda z, t: F.cross_entropy(z, t, weight=W, label_smoothing=0.2),
        T,
    ),
    "cross_entropy, probabilities": (
        lambda z, t: cross_entropy(z, t, weight=W),
        lambda z, t: F.cross_entropy(z, t, weight=W),
        P,
    ),
    "binary_cross_entropy": (
        lambda z, t: binary_cross_entropy(torch.sigmoid(z), t),
        lambda z, t: F.binary_cross_entropy(torch.sigmoid(z), t),
        Y,
    ),
    "binary_cross_entropy_with_logits": (
        lambda z, t: binary_cross_entropy_with_logits(z, t, pos_weight=W),
        lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=W),
        Y,
    ),
    "distribution_focal_loss": (
        lambda z, t: distribution_focal_loss(z, t),
        lambda z, t: detector_dfl(z[None], t[None]),
        Y_DFL,
    ),
    "distribution_focal_loss, bins": (
        lambda z, t: distribution_focal_loss(z, t, BINS),
        lambda z, t: dfl_formula(z, t, BINS),
        Y_BINS,
    ),
}


# vmap's slow fallback (an operation without a batching rule) warns: fail
@pytest.mark.filterwarnings("error:There is a performance drop:UserWarning")
@pytest.mark.parametrize(
    "ours, theirs, targets", ONE_SAMPLE.values(), ids=ONE_SAMPLE.keys()
)
def test_vmap_of_grad_gives_per_sample_gradients_with_validation_off(
    ours, theirs, targets
):
    with ce_lib.validation(False):
        per_sample = vmap(grad(ours))(Z, targets)
    expected = torch.stack([grad(theirs)(Z[n], targets[n]) for n in range(N)])
    torch.testing.assert_close(per_sample, expected, **TIGHT)


@pytest.mark.filterwarnings("error:There is a performance drop:UserWarning")
def test_vmap_over_the_logits_only_shares_the_targets():
    with ce_lib.validation(False):
        per_sample = vmap(
            grad(binary_cross_entropy_with_logits), in_dims=(0, None)
        )(Z, Y[0])
    expected = torch.sigmoid(Z) - Y[0]
    torch.testing.assert_close(per_sample, expected / C, **TIGHT)


def test_with_validation_on_vmap_refuses_the_checks_host_sync():
    with pytest.raises(RuntimeError, match="item"):
        vmap(grad(ONE_SAMPLE["cross_entropy"][0]))(Z, T)
