"""ce_lib.validation: on by default, scoped, per thread; with it off no
check runs, no call syncs the host, and every loss compiles as one graph
that equals eager."""

import threading

import pytest
import torch

import ce_lib
from ce_lib import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    distribution_focal_loss,
    entropy,
    integral,
    kl_divergence,
    two_hot,
)
from conftest import RecordOps

# ---- the switch ----


def test_validation_is_on_by_default_and_a_block_restores_it():
    assert ce_lib.validation.is_enabled()
    with ce_lib.validation(False) as v:
        assert isinstance(v, ce_lib.validation)
        assert not ce_lib.validation.is_enabled()
        with ce_lib.validation(True):
            assert ce_lib.validation.is_enabled()
        assert not ce_lib.validation.is_enabled()
    assert ce_lib.validation.is_enabled()


def test_an_exception_inside_the_block_restores_the_previous_state():
    with pytest.raises(ZeroDivisionError), ce_lib.validation(False):
        1 / 0  # noqa: B018
    assert ce_lib.validation.is_enabled()


def test_a_bare_call_sets_it_for_the_thread_like_set_grad_enabled():
    ce_lib.validation(False)
    assert not ce_lib.validation.is_enabled()
    ce_lib.validation(True)
    assert ce_lib.validation.is_enabled()


def test_the_setting_is_per_thread_and_a_new_thread_starts_with_it_on():
    seen = []
    with ce_lib.validation(False):
        worker = threading.Thread(
            target=lambda: seen.append(ce_lib.validation.is_enabled())
        )
        worker.start()
        worker.join()
        assert not ce_lib.validation.is_enabled()
    assert seen == [True]


@pytest.mark.parametrize("value", [0, 1, "no", None])
def test_the_switch_takes_only_a_bool(value):
    with pytest.raises(ValueError, match="enabled must be True or False"):
        ce_lib.validation(value)
    assert ce_lib.validation.is_enabled()


# ---- every public function, on valid inputs: (name, call) ----

G = torch.Generator().manual_seed(0)
Z = torch.randn(5, 4, generator=G, dtype=torch.float64)
T = torch.tensor([0, 3, 1, -100, 2])
P = torch.softmax(torch.randn(5, 4, generator=G, dtype=torch.float64), 1)
W = torch.rand(4, generator=G, dtype=torch.float64) + 0.5
Y = torch.rand(5, generator=G, dtype=torch.float64)
BINS = torch.tensor([-1.0, 0.0, 2.0, 2.5], dtype=torch.float64)


CALLS = {  # every loss of ce_lib, on logits z of shape 5 x 4
    "cross_entropy, indices": lambda z: cross_entropy(
        z, T, weight=W, label_smoothing=0.2
    ),
    "cross_entropy, probabilities": lambda z: cross_entropy(
        z, P, weight=W, reduction="sum"
    ),
    "cross_entropy, (N, C, d)": lambda z: cross_entropy(
        z.T[None], T[None].clamp(min=0), reduction="none"
    ),
    "binary_cross_entropy": lambda z: binary_cross_entropy(
        torch.sigmoid(z[:, 0]), Y
    ),
    "binary_cross_entropy_with_logits": lambda z: (
        binary_cross_entropy_with_logits(z, P, reduction="none", pos_weight=W)
    ),
    "distribution_focal_loss": lambda z: distribution_focal_loss(z, 3 * Y),
    "distribution_focal_loss, bins": lambda z: distribution_focal_loss(
        z, 3.5 * Y - 1, bins=BINS, reduction="none"
    ),
    "two_hot": lambda z: two_hot(3 * Y + z[:, 0] - z[:, 0].detach(), 4),
    "integral": lambda z: integral(z, bins=BINS),
    "entropy": lambda z: entropy(torch.softmax(z, 1)),
    "kl_divergence": lambda z: kl_divergence(P, torch.softmax(z, 1)),
}


def calls(z):
    return {name: call(z) for name, call in CALLS.items()}


def test_valid_inputs_give_the_same_values_and_gradients_either_way():
    z_on = Z.clone().requires_grad_()
    z_off = Z.clone().requires_grad_()
    on = calls(z_on)
    with ce_lib.validation(False):
        off = calls(z_off)
    for name in on:
        assert torch.equal(on[name], off[name]), name
        (g_on,) = torch.autograd.grad(on[name].sum(), z_on)
        (g_off,) = torch.autograd.grad(off[name].sum(), z_off)
        assert torch.equal(g_on, g_off), name


def test_with_validation_off_no_call_syncs_the_host():
    z = Z.clone().requires_grad_()
    with ce_lib.validation(False), RecordOps() as recorded:
        total = sum(v.sum() for v in calls(z).values())
        total.backward()
    assert recorded.ops  # the recorder sees the calls
    assert recorded.host_syncs() == set()


@pytest.mark.parametrize("name", list(CALLS))
def test_with_validation_on_each_loss_checks_and_so_syncs(name):
    # the other side of the test above: the recorder does see syncs
    with RecordOps() as recorded:
        CALLS[name](Z.clone().requires_grad_())
    assert "aten._local_scalar_dense" in recorded.host_syncs()


INVALID = {
    "probabilities outside [0, 1]": lambda: cross_entropy(Z, 2 * P),
    "NaN class weight": lambda: cross_entropy(Z, P, weight=W * torch.nan),
    "p above 1": lambda: binary_cross_entropy(Y + 1, Y),
    "infinite logit": lambda: binary_cross_entropy_with_logits(
        torch.tensor([torch.inf]), torch.tensor([1.0])
    ),
    "y outside the bins": lambda: distribution_focal_loss(Z, 3 * Y + 3.5),
    "bins not increasing": lambda: integral(Z, bins=BINS.flip(0)),
    "p outside [0, 1]": lambda: entropy(-P),
}


@pytest.mark.parametrize("call", INVALID.values(), ids=INVALID.keys())
def test_invalid_values_raise_with_validation_on_and_pass_unchecked_off(call):
    with pytest.raises(ValueError):
        call()
    with ce_lib.validation(False):
        call()  # no check: what the arithmetic gives, no error


def test_with_validation_off_a_bad_class_index_meets_torchs_own_check():
    bad = T.clamp(max=3) + 1  # 4 is not a class of 4
    with pytest.raises(ValueError, match=r"class index in \[0, 4\)"):
        cross_entropy(Z, bad)
    with ce_lib.validation(False), pytest.raises(RuntimeError, match="4"):
        cross_entropy(Z, bad)  # gather's index check, as in torch


def test_shape_and_option_checks_cost_nothing_and_always_run():
    with ce_lib.validation(False):
        with pytest.raises(ValueError, match="reduction must be one of"):
            cross_entropy(Z, T, reduction="avg")
        with pytest.raises(ValueError, match="must have the same shape"):
            binary_cross_entropy_with_logits(Z, Y)
        with pytest.raises(ValueError, match="ignore_index must be an int"):
            cross_entropy(Z, T, ignore_index=1.5)


# ---- torch.compile(fullgraph=True): one graph, equal to eager ----


def test_with_validation_off_every_loss_compiles_as_one_graph_equal_to_eager():
    # One compiled function holds every loss, each on its own copy of the
    # logits: fullgraph=True fails on any graph break (a host sync is one),
    # and each copy's gradient is its loss's own.
    names = list(CALLS)

    def every_loss(*zs):
        return [CALLS[name](z) for z, name in zip(zs, names, strict=True)]

    compiled = torch.compile(every_loss, fullgraph=True, backend="aot_eager")
    with ce_lib.validation(False):
        z_eager = [Z.clone().requires_grad_() for _ in names]
        z_compiled = [Z.clone().requires_grad_() for _ in names]
        eager = every_loss(*z_eager)
        out = compiled(*z_compiled)
    sum(v.sum() for v in eager).backward()
    sum(v.sum() for v in out).backward()
    for name, a, b, za, zb in zip(
        names, eager, out, z_eager, z_compiled, strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(
            zb.grad, za.grad, rtol=1e-12, atol=1e-12, msg=name
        )
