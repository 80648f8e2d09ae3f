"""Forward + backward speed of ce_lib's losses against their usual
implementations.

Run ``python benchmarks/bench_losses.py`` for the CPU goals, or
``python benchmarks/bench_losses.py --device cuda`` for the GPU ones (it
skips cleanly where there is no GPU). Each row times one training step of
a loss (forward, then backward to the logits) in float32, for ce_lib and
for its baseline, alternating the two in the same run; the ratio is the
median, over neighbouring pairs of steps, of time(ce_lib) / time(baseline),
so below 1 means ce_lib is faster. Every loss is timed twice: with
``ce_lib.validation`` on (the default) and off. Not a test: timings depend
on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import ce_lib

WARMUP = 5


@dataclass
class Row:
    loss: str
    size: str
    baseline: str
    validation: bool
    goal: float | None  # None: for information only
    ours_s: float
    base_s: float
    ratio: float


def step_time(
    loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor
) -> float:
    """Seconds for one forward + backward, gradients freshly cleared."""
    logits.grad = None
    cuda = logits.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss_fn(logits).backward()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(
    ours: Callable,
    baseline: Callable,
    logits: torch.Tensor,
    validation: bool,
    repeats: int,
) -> tuple[float, float, float]:
    """Median step times of ours and of the baseline, and the median of
    their paired ratios.

    The two run alternately (which goes first alternates too), so each
    pair of neighbouring steps sees the same load on the machine; the
    median of the pairs' ratios is the figure compared with the goal,
    robust to other programs slowing the machine for a while.
    """

    def ours_with_setting(z: torch.Tensor) -> torch.Tensor:
        with ce_lib.validation(validation):
            return ours(z)

    with torch.no_grad():  # the two must agree before their speeds count
        a, b = ours_with_setting(logits), baseline(logits)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a, b)
    for _ in range(WARMUP):
        step_time(ours_with_setting, logits)
        step_time(baseline, logits)
    times_ours, times_base = [], []
    for k in range(repeats):
        if k % 2 == 0:
            times_ours.append(step_time(ours_with_setting, logits))
            times_base.append(step_time(baseline, logits))
        else:
            times_base.append(step_time(baseline, logits))
            times_ours.append(step_time(ours_with_setting, logits))
    ratios = [a / b for a, b in zip(times_ours, times_base, strict=True)]
    return (
        statistics.median(times_ours),
        statistics.median(times_base),
        statistics.median(ratios),
    )


def detector_dfl(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """DFL as detectors (GFL, mmdetection) write it: two cross-entropies,
    weighted by the distances to the two neighbouring bins."""
    left = label.long()
    right = left + 1
    weight_left = right.float() - label
    weight_right = label - left.float()
    loss = F.cross_entropy(pred, left, reduction="none") * weight_left
    loss = loss + F.cross_entropy(pred, right, reduction="none") * weight_right
    return loss.mean()


def cpu_rows(device: torch.device, repeats: int) -> list[Row]:
    """The three goals of the library issue, validation on and off."""
    gen = torch.Generator().manual_seed(0)
    rows = []

    N, C = 8192, 1000
    logits = torch.randn(N, C, generator=gen).to(device).requires_grad_()
    target = torch.randint(0, C, (N,), generator=gen).to(device)
    for on in (True, False):
        rows.append(
            Row(
                "cross_entropy",
                f"N={N}, C={C}",
                "F.cross_entropy",
                on,
                1.10 if on else None,
                *compare(
                    lambda z: ce_lib.cross_entropy(z, target),
                    lambda z: F.cross_entropy(z, target),
                    logits,
                    on,
                    repeats,
                ),
            )
        )

    n = 1_000_000
    z = torch.randn(n, generator=gen).to(device).requires_grad_()
    y = torch.randint(0, 2, (n,), generator=gen).float().to(device)
    for on in (True, False):
        rows.append(
            Row(
                "binary_cross_entropy_with_logits",
                f"{n:,} elements",
                "F.binary_cross_entropy_with_logits",
                on,
                1.10 if on else None,
                *compare(
                    lambda z: ce_lib.binary_cross_entropy_with_logits(z, y),
                    lambda z: F.binary_cross_entropy_with_logits(z, y),
                    z,
                    on,
                    repeats,
                ),
            )
        )

    anchors, sides, K = 32768, 4, 16
    pred = torch.randn(anchors * sides, K, generator=gen)
    pred = pred.to(device).requires_grad_()
    # as detectors clamp it: below the last bin
    label = torch.rand(anchors * sides, generator=gen) * (K - 1 - 0.01)
    label = label.to(device)
    for on in (True, False):
        rows.append(
            Row(
                "distribution_focal_loss",
                f"{anchors}x{sides} sides, K={K}",
                "2x F.cross_entropy (GFL)",
                on,
                0.75 if on else None,
                *compare(
                    lambda p: ce_lib.distribution_focal_loss(p, label),
                    lambda p: detector_dfl(p, label),
                    pred,
                    on,
                    repeats,
                ),
            )
        )
    return rows


def gpu_rows(device: torch.device, repeats: int) -> list[Row]:
    """The GPU goals: cross_entropy at 8192 x 32000, off <= 1.10, on <=
    1.5."""
    gen = torch.Generator().manual_seed(0)
    N, C = 8192, 32000
    logits = torch.randn(N, C, generator=gen).to(device).requires_grad_()
    target = torch.randint(0, C, (N,), generator=gen).to(device)
    return [
        Row(
            "cross_entropy",
            f"N={N}, C={C}",
            "F.cross_entropy",
            on,
            1.5 if on else 1.10,
            *compare(
                lambda z: ce_lib.cross_entropy(z, target),
                lambda z: F.cross_entropy(z, target),
                logits,
                on,
                repeats,
            ),
        )
        for on in (True, False)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default): the CPU goals; cuda: the GPU goals, and the "
        "CPU rows on the GPU for information",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=41,
        help="timed steps of each implementation (default 41)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("GPU mode: no CUDA device here, nothing timed (skipped)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        rows = gpu_rows(device, args.repeats)
        for row in cpu_rows(device, args.repeats):
            row.goal = None  # the CPU goals are for the CPU
            rows.append(row)
        where = torch.cuda.get_device_name(device)
    else:
        rows = cpu_rows(device, args.repeats)
        where = f"CPU, {torch.get_num_threads()} threads"
    print(
        f"forward+backward, float32, {where}, torch {torch.__version__}, "
        f"medians of {args.repeats} interleaved repeats"
    )
    header = (
        f"{'loss':33} {'size':21} {'validation':10} {'ours ms':>8} "
        f"{'base ms':>8} {'ratio':>6} {'goal':>6}  result"
    )
    print(header)
    print("-" * len(header))
    all_pass = True
    for row in rows:
        if row.goal is None:
            goal, result = "", "info"
        else:
            ok = row.ratio <= row.goal
            all_pass &= ok
            goal, result = f"<={row.goal:.2f}", "pass" if ok else "FAIL"
        setting = "on" if row.validation else "off"
        print(
            f"{row.loss:33} {row.size:21} {setting:10}"
            f" {1e3 * row.ours_s:8.2f} {1e3 * row.base_s:8.2f}"
            f" {row.ratio:6.3f} {goal:>6}  {result}"
        )
    print(
        "baselines: "
        + "; ".join(sorted({f"{r.loss}: {r.baseline}" for r in rows}))
    )
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
