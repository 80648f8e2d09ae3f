"""Forward + backward speed of ce_lib's losses against their usual implementations.

Run ``python benchmarks/bench_losses.py`` (``--device cuda`` to time a GPU instead; the goals
are set for the CPU). Each row times one training step of a loss (forward, then backward to the
logits) in float32, for ce_lib and for its baseline, alternating the two in the same run; the
ratio is the median, over neighbouring pairs of steps, of time(ce_lib) / time(baseline), so
below 1 means ce_lib is faster. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import ce_lib

REPEATS = 41  # timed repeats of each implementation, interleaved
WARMUP = 5


def step_time(loss_fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor) -> float:
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


def compare(ours: Callable, baseline: Callable, logits: torch.Tensor) -> tuple[float, float, float]:
    """Median step times of ours and of the baseline, and the median of their paired ratios.

    The two run alternately (which goes first alternates too), so each pair of neighbouring
    steps sees the same load on the machine; the median of the pairs' ratios is the figure
    compared with the goal, robust to other programs slowing the machine for a while.
    """
    with torch.no_grad():  # the two must agree before their speeds are compared
        assert torch.allclose(ours(logits), baseline(logits), rtol=1e-4, atol=1e-6)
    for _ in range(WARMUP):
        step_time(ours, logits)
        step_time(baseline, logits)
    times_ours, times_base = [], []
    for k in range(REPEATS):
        if k % 2 == 0:
            times_ours.append(step_time(ours, logits))
            times_base.append(step_time(baseline, logits))
        else:
            times_base.append(step_time(baseline, logits))
            times_ours.append(step_time(ours, logits))
    ratios = [a / b for a, b in zip(times_ours, times_base)]
    return statistics.median(times_ours), statistics.median(times_base), statistics.median(ratios)


def detector_dfl(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """DFL as detectors (GFL, mmdetection) write it: two cross-entropies, weighted."""
    left = label.long()
    right = left + 1
    weight_left = right.float() - label
    weight_right = label - left.float()
    loss = (F.cross_entropy(pred, left, reduction="none") * weight_left
            + F.cross_entropy(pred, right, reduction="none") * weight_right)
    return loss.mean()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="where to time the losses (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []

    N, C = 8192, 1000
    logits = torch.randn(N, C).to(device).requires_grad_()
    target = torch.randint(0, C, (N,)).to(device)
    rows.append(("cross_entropy", f"N={N}, C={C}", "F.cross_entropy", 1.10,
                 compare(lambda z: ce_lib.cross_entropy(z, target),
                         lambda z: F.cross_entropy(z, target), logits)))

    n = 1_000_000
    z = torch.randn(n).to(device).requires_grad_()
    y = torch.randint(0, 2, (n,)).float().to(device)
    rows.append(("binary_cross_entropy_with_logits", f"{n:,} elements", "F.binary_cross_entropy_with_logits", 1.10,
                 compare(lambda z: ce_lib.binary_cross_entropy_with_logits(z, y),
                         lambda z: F.binary_cross_entropy_with_logits(z, y), z)))

    anchors, sides, K = 32768, 4, 16
    pred = torch.randn(anchors * sides, K).to(device).requires_grad_()
    label = (torch.rand(anchors * sides) * (K - 1 - 0.01)).to(device)  # as detectors clamp it, below the last bin
    rows.append(("distribution_focal_loss", f"{anchors}x{sides} sides, K={K}", "2x F.cross_entropy (GFL)", 0.75,
                 compare(lambda p: ce_lib.distribution_focal_loss(p, label),
                         lambda p: detector_dfl(p, label), pred)))

    where = f"CPU, {torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"forward+backward, float32, {where}, torch {torch.__version__}, "
          f"medians of {REPEATS} interleaved repeats")
    header = f"{'loss':34} {'size':26} {'baseline':36} {'ours ms':>8} {'base ms':>8} {'ratio':>6} {'goal':>6}  result"
    print(header)
    print("-" * len(header))
    all_pass = True
    for name, size, base_name, goal, (t_ours, t_base, ratio) in rows:
        ok = ratio <= goal
        all_pass &= ok
        print(f"{name:34} {size:26} {base_name:36} {1e3 * t_ours:8.2f} {1e3 * t_base:8.2f} "
              f"{ratio:6.3f} {'<=' + format(goal, '.2f'):>6}  {'pass' if ok else 'FAIL'}")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
