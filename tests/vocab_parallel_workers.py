"""What each rank runs in tests/test_parallel.py (a module, so that the
processes started by ce_lib.scale.run_local_group can import it)."""

import torch
import torch.distributed as dist

import ce_lib
from ce_lib import vocab_parallel_cross_entropy
from ce_lib.scale import vocab_parallel_step

#: keyword sets compared with one-process F.cross_entropy
SETTINGS = [
    dict(reduction=reduction, label_smoothing=eps, ignore_index=ignore)
    for reduction in ("mean", "sum", "none")
    for eps in (0.0, 0.2)
    for ignore in (-100, 1)
]


def upstream(setting, N, dtype):
    """The gradient to backpropagate: a number, or a vector for 'none'."""
    if setting["reduction"] == "none":
        return torch.linspace(-1.0, 2.0, N, dtype=dtype)
    return torch.tensor(0.7, dtype=dtype)


def target_for(setting, target):
    """The target a setting uses: with ignore_index=1, the rows marked -100
    become 1 (so that both are ignored)."""
    ignore = setting["ignore_index"]
    return torch.where(target == -100, ignore, target)


def run_settings(rank, R, logits, target):
    """vocab_parallel_step for every setting, in SETTINGS' order."""
    N = logits.shape[0]
    out = []
    for s in SETTINGS:
        s = dict(s, upstream=upstream(s, N, logits.dtype))
        t = target_for(s, target)
        out += vocab_parallel_step(rank, R, logits, t, [s])
    return out


def error_of(fn):
    """The ValueError message that ``fn()`` raises, or None."""
    try:
        fn()
    except ValueError as error:
        return str(error)
    return None


def bad_inputs(rank, R):
    """Each wrong input: the message every rank got (they must all raise,
    or the next collective would wait forever)."""
    N, width = 4, 3
    z = torch.randn(N, width, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, R * width - 1])
    f = vocab_parallel_cross_entropy
    cases = {
        "widths differ": lambda: f(
            torch.zeros(N, width + (rank == 0)), y),
        "N differs": lambda: f(
            torch.zeros(N + (rank == 0), width),
            torch.zeros(N + (rank == 0), dtype=torch.long)),
        "dtype differs": lambda: f(
            z if rank == 0 else z.float(), y),
        "targets differ": lambda: f(z, y + (rank == 0)),
        "class index too large": lambda: f(z, torch.full((N,), R * width)),
        "class index negative": lambda: f(z, torch.full((N,), -1)),
        "one rank's logits are 1-D": lambda: f(
            z[0] if rank == R - 1 else z, y),
        "one rank's target is float": lambda: f(
            z, y.double() if rank == R - 1 else y),
        "one rank's reduction is unknown": lambda: f(
            z, y, reduction="avg" if rank == R - 1 else "mean"),
        "reductions differ": lambda: f(
            z, y, reduction="sum" if rank == 0 else "mean"),
        "smoothing differs": lambda: f(
            z, y, label_smoothing=0.1 * (rank == 0)),
        "ignore_index differs": lambda: f(
            z, y, ignore_index=-100 - (rank == 0)),
        "mean of nothing": lambda: f(z, torch.full((N,), -100)),
        "NaN logits on rank 0": lambda: f(
            torch.where(torch.tensor(rank == 0), torch.nan, z), y),
    }  # fmt: skip
    out = {name: error_of(case) for name, case in cases.items()}
    # after all of that the group still works, in step
    good = f(z, y)
    summed = good.detach().clone()
    dist.all_reduce(summed)
    out["still in step"] = bool(torch.isclose(summed, R * good.detach()))
    return out


def all_cases(rank, R, logits, target):
    """Everything test_parallel.py checks, in one group of R processes."""
    out = {
        "float64": run_settings(rank, R, logits, target),
        "float32": run_settings(rank, R, logits.float(), target),
        "large logits": vocab_parallel_step(rank, R, 300 * logits, target,
                                            [dict()]),
        "bfloat16": vocab_parallel_step(rank, R, logits.bfloat16(), target,
                                        [dict()]),
    }  # fmt: skip
    with ce_lib.validation(False):
        out["no validation"] = vocab_parallel_step(rank, R, logits, target,
                                                   [dict()])  # fmt: skip
    out["bad"] = bad_inputs(rank, R)
    # a subgroup of ranks 0 and R-1; the others are not members
    members = [0, R - 1]
    sub = dist.new_group(members)
    width = logits.shape[1] // R
    if rank in members:
        i = members.index(rank)
        z = logits[:, : 2 * width][:, i * width : (i + 1) * width]
        z = z.clone().requires_grad_()
        t = torch.where(target < 2 * width, target, -100)
        loss = vocab_parallel_cross_entropy(z, t, group=sub)
        loss.backward()
        out["subgroup"] = {"loss": loss.detach(), "grad": z.grad}
    else:
        out["subgroup"] = error_of(lambda: vocab_parallel_cross_entropy(
            logits[:, :width], target, group=sub))  # fmt: skip
    return out


def fails_on_rank_1(rank, R):
    """For the launcher's test: one rank raises."""
    if rank == 1:
        raise KeyError("rank 1 fails on purpose")
    return rank
