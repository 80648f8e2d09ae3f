"""Vocabulary-parallel cross-entropy (chapter 6): 2 and 3 real processes in
a gloo group on 127.0.0.1 against one-process F.cross_entropy, every
option, the collectives it makes, and errors raised on every rank."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from vocab_parallel_workers import (
    SETTINGS,
    all_cases,
    fails_on_rank_1,
    target_for,
)
from vocab_parallel_workers import upstream as upstream_for

from ce_lib import vocab_parallel_cross_entropy
from ce_lib.scale import run_local_group, warm_up_local_group

# Start the server the groups are forked from now, at collection: it imports
# torch in the background while the other test files run.
warm_up_local_group()

N, V = 6, 12  # V splits evenly over 2 and 3 ranks
TOL = {torch.float64: 1e-12, torch.float32: 2e-6}


def full_problem():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(N, V, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 11, 1, 5, -100, 7])  # -100 and 1: ignored
    return logits, target


@pytest.fixture(scope="module", params=[2, 3], ids=["R=2", "R=3"])
def group(request):
    """One group of R processes runs every case; the tests read its answers."""
    logits, target = full_problem()
    R = request.param
    return R, logits, target, run_local_group(all_cases, R, logits, target)


def reference(logits, target, setting, dtype):
    z = logits.to(dtype).clone().requires_grad_()
    options = {k: v for k, v in setting.items() if k != "upstream"}
    loss = F.cross_entropy(z, target, **options)
    loss.backward(upstream_for(setting, N, dtype) if "reduction" in setting
                  else torch.ones_like(loss))  # fmt: skip
    return loss.detach(), z.grad


def gathered(answers, key, k):
    """Every rank's loss, and the slices' gradients side by side."""
    losses = [a[key][k]["loss"] for a in answers]
    grad = torch.cat([a[key][k]["grad"] for a in answers], dim=1)
    return losses, grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", range(len(SETTINGS)),
                         ids=[str(s) for s in SETTINGS])  # fmt: skip
def test_loss_and_gradients_equal_one_process_cross_entropy(group, dtype, k):
    R, logits, target, answers = group
    setting = SETTINGS[k]
    t = target_for(setting, target)
    want_loss, want_grad = reference(logits, t, setting, dtype)
    losses, grad = gathered(answers, str(dtype).replace("torch.", ""), k)
    tol = TOL[dtype]
    for loss in losses:  # the same loss on every rank
        torch.testing.assert_close(loss, want_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(grad, want_grad, rtol=tol, atol=tol)


def test_forward_makes_two_float_all_reduces_and_backward_none(group):
    R, logits, target, answers = group
    for a in answers:
        for setting, result in zip(SETTINGS, a["float64"]):
            floats = [c for c in result["forward"] if c["dtype"] != "int64"]
            rows = 3 if setting["label_smoothing"] > 0 else 2
            assert [(c["op"], c["elements"]) for c in floats] == [
                ("MAX", N),
                ("SUM", rows * N),
            ]
            assert result["backward"] == []


def test_checks_cost_two_small_all_reduces_and_validation_off_skips_them(
    group,
):
    R, logits, target, answers = group
    checked = answers[0]["float64"][0]["forward"]
    unchecked = answers[0]["no validation"][0]["forward"]
    assert [c["dtype"] for c in checked] == ["int64"] * 2 + ["float64"] * 2
    assert [c["dtype"] for c in unchecked] == ["float64"] * 2
    assert checked[1]["elements"] == 2 * N  # the target, max and -max


def test_large_logits_stay_finite_and_exact(group):
    R, logits, target, answers = group
    want, want_grad = reference(300 * logits, target, {}, torch.float64)
    losses, grad = gathered(answers, "large logits", 0)
    assert all(torch.isfinite(loss) for loss in losses)
    torch.testing.assert_close(losses[0], want, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)


def test_bfloat16_is_computed_in_float32(group):
    R, logits, target, answers = group
    want, want_grad = reference(logits.bfloat16().float(), target, {},
                                torch.float32)  # fmt: skip
    losses, grad = gathered(answers, "bfloat16", 0)
    assert losses[0].dtype == grad.dtype == torch.bfloat16
    torch.testing.assert_close(losses[0].float(), want, rtol=1e-2, atol=0)
    torch.testing.assert_close(grad.float(), want_grad, rtol=2e-2,
                               atol=2e-3)  # fmt: skip


def test_a_subgroup_splits_its_own_vocabulary(group):
    R, logits, target, answers = group
    width = V // R
    t = torch.where(target < 2 * width, target, -100)
    want, want_grad = reference(logits[:, : 2 * width], t, {}, torch.float64)
    first, last = answers[0]["subgroup"], answers[-1]["subgroup"]
    torch.testing.assert_close(first["loss"], want)
    torch.testing.assert_close(last["loss"], want)
    grad = torch.cat([first["grad"], last["grad"]], dim=1)
    torch.testing.assert_close(grad, want_grad)
    for a in answers[1:-1]:  # ranks outside the subgroup
        assert "not a member" in a["subgroup"]


EXPECTED = {  # case: what the message says (on the ranks it concerns)
    "widths differ": "same width V/R on every rank (an equal slice of the "
    "classes each); got values from 3 to 4",
    "N differs": "same number of rows N on every rank",
    "dtype differs": "same dtype on every rank",
    "targets differ": "target must be the same on every rank",
    "class index too large": "class index in [0, {V}) or ignore_index",
    "class index negative": "got -1",
    "one rank's logits are 1-D": "local_logits must have shape (N, V/R)",
    "one rank's target is float": "target must hold class indices",
    "one rank's reduction is unknown": "reduction must be one of",
    "reductions differ": "reduction must be the same on every rank",
    "smoothing differs": "label_smoothing must be the same on every rank",
    "ignore_index differs": "ignore_index must be the same on every rank",
    "mean of nothing": "nothing to average",
    "NaN logits on rank 0": "local_logits must be finite",
}
ONE_RANK = ("one rank's logits are 1-D", "one rank's target is float",
            "one rank's reduction is unknown")  # fmt: skip


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_input_raises_on_every_rank(group, case):
    R, logits, target, answers = group
    messages = [a["bad"][case] for a in answers]
    assert all(m is not None for m in messages), messages
    expected = EXPECTED[case].format(V=3 * R)
    if case in ONE_RANK:  # the rank at fault says why; the others point at it
        assert expected in messages[-1]
        assert all("another rank" in m for m in messages[:-1])
    else:
        assert all(expected in m for m in messages), messages


def test_the_group_stays_in_step_after_every_error(group):
    R, logits, target, answers = group
    assert all(a["bad"]["still in step"] for a in answers)


def test_a_failing_rank_makes_the_launcher_raise_with_its_traceback():
    with pytest.raises(RuntimeError, match="rank 1 failed"):
        run_local_group(fails_on_rank_1, 2, timeout=60)


def test_without_a_process_group_it_raises():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="not initialised"):
        vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.zeros(2))


def test_one_process_group_equals_cross_entropy_without_starting_processes():
    logits, target = full_problem()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0,
                            world_size=1)  # fmt: skip
    try:
        z = logits.clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(z, target, label_smoothing=0.1)
        loss.backward()
        want, want_grad = reference(
            logits, target, dict(label_smoothing=0.1), torch.float64
        )
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(loss.detach(), want)
    torch.testing.assert_close(z.grad, want_grad)


def test_the_launcher_refuses_an_empty_group():
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        run_local_group(all_cases, 0)
