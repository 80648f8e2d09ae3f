"""Chunked linear cross-entropy (chapter 6): values and gradients against
``F.cross_entropy(input @ W.T + b, ...)`` for every option, one chunk of
logits at a time, and loud errors."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import ce_lib
from ce_lib import linear_cross_entropy
from ce_lib.linear import default_chunk_size
from ce_lib.scale import LiveBytes
from conftest import DEVICES

REDUCTIONS = ["none", "mean", "sum"]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def problem(N=7, D=5, V=11, dtype=torch.float64, bias=True, seed=0,
            device="cpu"):  # fmt: skip
    """Hidden states, weights, bias and targets with two ignored rows."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, D, generator=g, dtype=dtype)
    W = torch.randn(V, D, generator=g, dtype=dtype)
    b = torch.randn(V, generator=g, dtype=dtype) if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    t[1 : N : max(N // 2, 1)] = -100
    leaves = [x.to(device).requires_grad_() for x in (h, W, b)
              if x is not None]  # fmt: skip
    return leaves, t.to(device)


def torch_loss(leaves, t, **options):
    h, W, *b = leaves
    z = h @ W.T + (b[0] if b else 0)
    return F.cross_entropy(z, t, **options)


def ours(leaves, t, chunk_size=None, **options):
    h, W, *b = leaves
    return linear_cross_entropy(
        h, W, t, linear_bias=b[0] if b else None, chunk_size=chunk_size,
        **options,
    )  # fmt: skip


def value_and_grads(fn, leaves, t, upstream, **options):
    loss = fn(leaves, t, **options)
    return loss.detach(), torch.autograd.grad(loss, leaves, upstream)


def assert_close(a, b, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_equal_torch_for_every_chunk_size(
    device, dtype, reduction, eps, bias
):
    leaves, t = problem(dtype=dtype, bias=bias, device=device)
    g = torch.Generator().manual_seed(1)
    upstream = (
        torch.randn(len(t), generator=g, dtype=dtype)
        if reduction == "none"
        else torch.tensor(1.7, dtype=dtype)
    )
    upstream = upstream.to(device)
    options = dict(reduction=reduction, label_smoothing=eps)
    want = value_and_grads(torch_loss, leaves, t, upstream, **options)
    for chunk_size in [1, 2, 3, 7, 50, None]:  # 1, uneven, N, > N, default
        got = value_and_grads(
            ours, leaves, t, upstream, chunk_size=chunk_size, **options
        )
        assert_close(got[0], want[0], dtype)
        for a, b in zip(got[1], want[1]):
            assert_close(a, b, dtype)


@given(
    N=st.integers(1, 12), D=st.integers(1, 6), V=st.integers(1, 9),
    chunk=st.integers(1, 14), eps=st.sampled_from([0.0, 0.1, 1.0]),
    reduction=st.sampled_from(REDUCTIONS), seed=st.integers(0, 2**16),
    ignore_index=st.sampled_from([-100, 0, 3]),
    scale=st.sampled_from([1.0, 30.0]),
)  # fmt: skip
def test_random_problems_equal_torch(N, D, V, chunk, eps, reduction, seed,
                                     ignore_index, scale):  # fmt: skip
    leaves, t = problem(N, D, V, seed=seed)
    t[t == -100] = ignore_index
    with torch.no_grad():
        leaves[1].mul_(scale)
    if reduction == "mean" and not bool((t != ignore_index).any()):
        t[0] = ignore_index + 1 if ignore_index + 1 < V else 0
        if not bool((t != ignore_index).any()):
            return
    options = dict(reduction=reduction, label_smoothing=eps,
                   ignore_index=ignore_index)  # fmt: skip
    upstream = torch.ones(N, dtype=torch.float64) if reduction == "none" \
        else torch.tensor(1.0, dtype=torch.float64)  # fmt: skip
    want = value_and_grads(torch_loss, leaves, t, upstream, **options)
    got = value_and_grads(ours, leaves, t, upstream, chunk_size=chunk,
                          **options)  # fmt: skip
    assert_close(got[0], want[0], torch.float64)
    for a, b in zip(got[1], want[1]):
        assert_close(a, b, torch.float64)


def test_ignored_rows_get_zero_loss_and_zero_gradient():
    leaves, t = problem()
    loss = ours(leaves, t, reduction="none")
    loss.sum().backward()
    ignored = t == -100
    assert bool((loss[ignored] == 0).all())
    assert bool((leaves[0].grad[ignored] == 0).all())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_a_second_backward_through_the_graph_gives_the_same_gradients(
    reduction,
):
    leaves, t = problem()
    loss = ours(leaves, t, chunk_size=3, reduction=reduction).sum()
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second):
        assert_close(a, b, torch.float64)


def test_gradients_of_only_some_arguments():
    (h, W, b), t = problem()
    W.requires_grad_(False)
    want = torch.autograd.grad(torch_loss([h, W, b], t), [h, b])
    got = torch.autograd.grad(ours([h, W, b], t, chunk_size=2), [h, b])
    for a, c in zip(got, want):
        assert_close(a, c, torch.float64)


def test_without_grad_mode_it_computes_only_the_loss():
    leaves, t = problem()
    with torch.no_grad():
        loss = ours(leaves, t, chunk_size=2)
    assert not loss.requires_grad
    assert_close(loss, torch_loss(leaves, t).detach(), torch.float64)


def test_one_sample_is_a_row_and_a_class_index():
    (h, W, b), t = problem(bias=True)
    row = 0
    got = linear_cross_entropy(h[row], W, t[row], linear_bias=b,
                               reduction="none")  # fmt: skip
    want = F.cross_entropy(h[row] @ W.T + b, t[row], reduction="none")
    assert got.shape == ()
    assert_close(got, want, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    leaves, t = problem(N=16, D=8, V=40, dtype=torch.float32)
    low = [x.detach().to(dtype).requires_grad_() for x in leaves]
    loss = ours(low, t, chunk_size=5)
    loss.backward()
    assert loss.dtype == dtype and all(x.grad.dtype == dtype for x in low)
    # reference: the same rounded inputs, in float32
    exact = [x.detach().float().requires_grad_() for x in low]
    want = torch_loss(exact, t)
    want.backward()
    assert abs(loss.item() - want.item()) <= 1e-2 * abs(want.item())
    for x, y in zip(low, exact):
        torch.testing.assert_close(x.grad.float(), y.grad, rtol=2e-2,
                                   atol=2e-3)  # fmt: skip


def test_an_empty_batch_sums_to_zero_and_none_is_empty():
    leaves, t = problem(N=0)
    assert ours(leaves, t, reduction="sum").item() == 0
    assert ours(leaves, t, reduction="none").shape == (0,)


def test_it_holds_one_chunk_of_logits_at_a_time():
    """Peak live memory of a step: the gradients it returns, one chunk of
    chunk_size x V logits and O(N + V) numbers, never N x V logits."""
    N, D, V, rows = 64, 4, 512, 8
    h = torch.randn(N, D, requires_grad=True)
    W = torch.randn(V, D, requires_grad=True)
    t = torch.randint(0, V, (N,))
    for reduction in REDUCTIONS:
        h.grad = W.grad = None
        with LiveBytes() as memory:
            loss = linear_cross_entropy(h, W, t, chunk_size=rows,
                                        reduction=reduction)  # fmt: skip
            loss.sum().backward()
        grads = 4 * (N * D + V * D)
        chunk = 4 * rows * V
        assert memory.peak <= grads + chunk + 4 * 16 * (N + V), reduction
    with LiveBytes() as memory:  # the naive path, for contrast
        F.cross_entropy(h @ W.T, t).backward()
    assert memory.peak >= 2 * 4 * N * V


def test_the_default_chunk_holds_as_many_logits_as_the_hidden_states():
    assert default_chunk_size(8192, 4096, 128256) == 262  # 8192*4096/V
    assert default_chunk_size(2048, 256, 16384) == 256  # 2**22 logits
    assert default_chunk_size(8192, 16, 1000) == 4195  # 2**22 logits
    assert default_chunk_size(100, 512, 32768) == 100  # at most N
    assert default_chunk_size(0, 5, 5) == 1


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bfloat16_matches_a_float32_reference_to_bfloat16_precision(
    reduction,
):
    """The products run in bfloat16, the softmax in float32: the loss and
    gradients agree with float32 arithmetic on the same rounded inputs to
    a few bfloat16 roundings (eps = 2**-8), like F.cross_entropy on
    bfloat16 logits does."""
    leaves, t = problem(N=48, D=32, V=300, dtype=torch.float32)
    low = [x.detach().bfloat16().requires_grad_() for x in leaves]
    exact = [x.detach().float().requires_grad_() for x in low]
    g = torch.Generator().manual_seed(1)
    upstream = torch.randn(48, generator=g) if reduction == "none" \
        else torch.tensor(1.0)  # fmt: skip
    options = dict(reduction=reduction, label_smoothing=0.1)
    want = value_and_grads(torch_loss, exact, t, upstream, **options)
    got = value_and_grads(ours, low, t, upstream.bfloat16(), chunk_size=5,
                          **options)  # fmt: skip
    plain = value_and_grads(torch_loss, low, t, upstream.bfloat16(),
                            **options)  # torch, all in bfloat16  # fmt: skip
    assert got[0].dtype == torch.bfloat16
    assert all(g.dtype == torch.bfloat16 for g in got[1])

    def error(a, b):
        return ((a.float() - b).norm() / b.norm()).item()

    bf16_eps = 2.0**-8
    for a, b, c in zip((got[0], *got[1]), (want[0], *want[1]),
                       (plain[0], *plain[1])):  # fmt: skip
        assert error(a, b) <= 2 * bf16_eps
        assert error(a, b) <= 2 * max(error(c, b), bf16_eps / 2)


def test_bfloat16_makes_no_float32_copy_of_input_or_weight():
    """Peak of a bfloat16 step on the meta device: the bfloat16 gradients,
    one chunk of logits in bfloat16 and in float32 (6 bytes a logit) and
    O(N + V) numbers; a float32 copy of W (4 V D bytes) would not fit."""
    N, D, V, rows = 64, 32, 4096, 8
    h = torch.empty(N, D, device="meta", dtype=torch.bfloat16)
    W = torch.empty(V, D, device="meta", dtype=torch.bfloat16)
    t = torch.zeros(N, dtype=torch.long, device="meta")
    h.requires_grad_()
    W.requires_grad_()
    for reduction in REDUCTIONS:
        with ce_lib.validation(False), LiveBytes() as memory:
            loss = linear_cross_entropy(h, W, t, chunk_size=rows,
                                        reduction=reduction)  # fmt: skip
            loss.sum().backward()
        grads = 2 * (N * D + V * D)
        chunk = (2 + 4) * rows * V
        assert memory.peak <= grads + chunk + 4 * 16 * (N + V), reduction
        assert memory.peak < grads + 4 * V * D, reduction


def test_it_matches_torchs_own_linear_cross_entropy():
    leaves, t = problem(N=33, D=6, V=70, bias=False)
    h, W = leaves
    opts = torch.nn.LinearCrossEntropyOptions()
    for reduction in REDUCTIONS:  # its chunked path has no smoothing
        want = F.linear_cross_entropy(h, W, t, options=opts,
                                      reduction=reduction)  # fmt: skip
        got = linear_cross_entropy(h, W, t, reduction=reduction,
                                   chunk_size=4)  # fmt: skip
        assert_close(got, want, torch.float64)


def test_with_validation_off_it_needs_no_host_sync_and_agrees():
    leaves, t = problem()
    with ce_lib.validation(False):
        got = ours(leaves, t, chunk_size=2)
    assert_close(got, torch_loss(leaves, t), torch.float64)


def test_with_validation_off_it_runs_on_the_meta_device():
    h = torch.empty(8, 3, device="meta", requires_grad=True)
    W = torch.empty(20, 3, device="meta", requires_grad=True)
    t = torch.zeros(8, dtype=torch.long, device="meta")
    with ce_lib.validation(False):
        linear_cross_entropy(h, W, t, chunk_size=3).backward()
    assert W.grad.shape == W.shape


# ---- bad input: loud, named errors ----

F64 = dict(dtype=torch.float64)
SHAPE = "must have shape"
CHUNK = "chunk_size must be None or an int >= 1"
INDICES = "target must hold class indices"
BAD = {
    "input 3-D": (dict(h=torch.zeros(2, 3, 4)), "input " + SHAPE),
    "weight width": (dict(W=torch.zeros(11, 4)), "linear_weight " + SHAPE),
    "weight no classes": (dict(W=torch.zeros(0, 5)), "linear_weight " + SHAPE),
    "weight dtype": (
        dict(W=torch.zeros(11, 5)),
        "linear_weight must have input's dtype",
    ),
    "bias shape": (dict(b=torch.zeros(10, **F64)), "linear_bias " + SHAPE),
    "bias dtype": (
        dict(b=torch.zeros(11)),
        "linear_bias must have input's dtype",
    ),
    "target shape": (dict(t=torch.zeros(6, dtype=int)), "target " + SHAPE),
    "target float": (dict(t=torch.zeros(7)), INDICES),
    "target bool": (dict(t=torch.zeros(7, dtype=bool)), INDICES),
    "class too large": (
        dict(t=torch.tensor([0, 1, 2, 11, 4, 5, 6])),
        r"class index in \[0, 11\) or ignore_index=-100; got 11",
    ),
    "class negative": (dict(t=torch.tensor([0, 1, -1, 3, 4, 5, 6])), "-1"),
    "ignore_index float": (dict(ignore_index=-100.0), "must be an integer"),
    "chunk 0": (dict(chunk_size=0), CHUNK),
    "chunk float": (dict(chunk_size=2.0), CHUNK),
    "chunk bool": (dict(chunk_size=True), CHUNK),
    "reduction": (dict(reduction="avg"), "reduction must be one of"),
    "smoothing": (
        dict(label_smoothing=1.5),
        r"label_smoothing must lie in \[0, 1\]",
    ),
    "mean of nothing": (
        dict(t=torch.full((7,), -100)),
        "nothing to average: every target is ignore_index",
    ),
    "nan weight": (
        dict(W=torch.full((11, 5), torch.nan, **F64)),
        "linear_weight must be finite; got NaN",
    ),
    "inf input": (
        dict(h=torch.full((7, 5), torch.inf, **F64)),
        "input must be finite; got inf",
    ),
    "one sample target": (
        dict(h=torch.zeros(5, **F64), t=torch.zeros(1, dtype=int)),
        "one class index",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_a_value_error_naming_the_argument(case):
    change, message = BAD[case]
    (h, W, b), t = problem()
    args = dict(h=h.detach(), W=W.detach(), b=b.detach(), t=t)
    options = dict(chunk_size=None, reduction="mean", label_smoothing=0.0)
    for key, value in change.items():
        (args if key in args else options)[key] = value
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(
            args["h"], args["W"], args["t"], linear_bias=args["b"], **options
        )
