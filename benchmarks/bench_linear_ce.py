"""Peak memory and time of the output layer + cross-entropy, three ways.

At N = 8192 rows, D = 512 hidden units and V = 32768 classes, float32, one
training step (forward, then backward to the hidden states and the output
weights) of:

- naive: ``F.cross_entropy(x @ W.T, t)``, which holds all N x V logits;
- torch: torch 2.13's chunked path, ``F.linear_cross_entropy(x, W, t,
  options=torch.nn.LinearCrossEntropyOptions())``;
- ce_lib: ``ce_lib.linear_cross_entropy(x, W, t)``.

Memory: each method runs in its own fresh process, which measures the peak
memory the step adds to what the inputs already take: on the CPU the peak
resident set size (VmHWM, reset just before the step) minus the resident
set before it; on a GPU ``torch.cuda.max_memory_allocated`` minus
``memory_allocated`` before it. Both include the gradients of x and W that
every method must produce (N x D + V x D floats, 80 MiB here). Time: one
more fresh process runs the three methods in turn, ``--repeats`` times
each, and the time ratio is the median over rounds of time(ce_lib) /
time(baseline) within a round, so that both see the same load. The whole
measurement is repeated ``--runs`` times and the table gives the medians.

Run ``python benchmarks/bench_linear_ce.py`` (about 6 minutes on two quiet
cores); ``--device cuda`` measures a GPU instead and skips cleanly when
there is none; ``--write benchmarks/results/linear_ce_cpu.json`` stores the
figures that chapter 6 shows. Exits with status 1 when a goal is missed.
Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

METHODS = ("naive", "torch", "ce_lib")
#: (figure, baseline, goal): ce_lib / baseline must be at most the goal.
GOALS = (
    ("memory", "naive", 1 / 8),
    ("memory", "torch", 1.0),
    ("time", "naive", 1.3),
    ("time", "torch", 1.10),
)
MiB = 2**20


def loss_function(method: str):
    """The loss of (x, W, t) by one of the three methods."""
    import torch
    import torch.nn.functional as F

    import ce_lib

    if method == "naive":
        return lambda x, W, t: F.cross_entropy(x @ W.T, t)
    if method == "torch":
        options = torch.nn.LinearCrossEntropyOptions()
        return lambda x, W, t: F.linear_cross_entropy(x, W, t, options=options)
    return lambda x, W, t: ce_lib.linear_cross_entropy(x, W, t)


def make_inputs(N: int, D: int, V: int, device: str, seed: int = 0):
    """Hidden states, output weights (logits of a few units) and targets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g).to(device).requires_grad_()
    W = (torch.randn(V, D, generator=g) / D**0.5).to(device).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g).to(device)
    return x, W, t


def step(loss_fn, x, W, t) -> None:
    """One training step: forward, backward, gradients cleared first."""
    x.grad = W.grad = None
    loss_fn(x, W, t).backward()


def rss_bytes(field: str) -> int:
    """VmRSS or VmHWM (peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(method: str, N: int, D: int, V: int, device: str) -> dict:
    """In a fresh process: the peak memory one step of ``method`` adds."""
    import torch

    loss_fn = loss_function(method)
    small = make_inputs(64, D, 256, device, seed=1)
    step(loss_fn, *small)  # load kernels and thread pools first
    del small
    x, W, t = make_inputs(N, D, V, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(loss_fn, x, W, t)
        torch.cuda.synchronize()
        added = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        before = rss_bytes("VmRSS")
        step(loss_fn, x, W, t)
        added = rss_bytes("VmHWM") - before
    return {"added_bytes": added}


def child_time(N: int, D: int, V: int, device: str, repeats: int) -> dict:
    """In a fresh process: step times of the three methods, in turn."""
    import torch

    x, W, t = make_inputs(N, D, V, device)
    fns = {m: loss_function(m) for m in METHODS}
    with torch.no_grad():  # all three must agree before they are timed
        ref = fns["naive"](x, W, t).item()
        for m in METHODS:
            value = fns[m](x, W, t).item()
            assert abs(value - ref) <= 1e-4 * abs(ref), (m, value, ref)
    for m in METHODS:  # warm-up
        step(fns[m], x, W, t)
    times = {m: [] for m in METHODS}
    for k in range(repeats):
        order = METHODS if k % 2 == 0 else METHODS[::-1]
        for m in order:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(fns[m], x, W, t)
            if device == "cuda":
                torch.cuda.synchronize()
            times[m].append(time.perf_counter() - start)
    return {"times": times}


def run_child(args: argparse.Namespace, *extra: str) -> dict:
    """Run this script in a fresh Python process; return its JSON answer."""
    cmd = [sys.executable, __file__, *extra, "--device", args.device]
    cmd += ["--size", str(args.size[0]), str(args.size[1]), str(args.size[2])]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def one_run(args: argparse.Namespace) -> dict:
    """Memory of each method (fresh processes) and times (one process)."""
    memory = {
        m: run_child(args, "--child-memory", m)["added_bytes"] for m in METHODS
    }
    times = run_child(args, "--child-time", "--repeats", str(args.repeats))
    times = times["times"]
    figures = {f"memory {m}": memory[m] / MiB for m in METHODS}
    figures |= {f"time {m}": statistics.median(times[m]) for m in METHODS}
    for base in ("naive", "torch"):
        figures[f"memory ratio {base}"] = memory["ce_lib"] / memory[base]
        figures[f"time ratio {base}"] = statistics.median(
            a / b for a, b in zip(times["ce_lib"], times[base])
        )
    return figures


def describe_machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [
                ln.split(":", 1)[1].strip()
                for ln in f
                if ln.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} threads, torch {torch.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--size",
        type=int,
        nargs=3,
        default=[8192, 512, 32768],
        metavar=("N", "D", "V"),
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="whole measurements; the table gives medians",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed steps of each method per run",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--write", default=None, help="store the figures in this JSON file"
    )
    parser.add_argument("--child-memory", choices=METHODS, default=None)
    parser.add_argument("--child-time", action="store_true")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    N, D, V = args.size
    if args.child_memory:
        answer = child_memory(args.child_memory, N, D, V, args.device)
        print(json.dumps(answer))
        return 0
    if args.child_time:
        print(json.dumps(child_time(N, D, V, args.device, args.repeats)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: skipping the GPU measurement")
        return 0
    if args.device == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        print("this CPU measurement needs Linux's /proc/self/clear_refs")
        return 0

    runs, loads = [], []
    for k in range(args.runs):
        loads.append(os.getloadavg()[0])  # what else the machine was doing
        runs.append(one_run(args))
        print(
            f"run {k + 1}/{args.runs}: "
            + ", ".join(
                f"{key} {value:.3g}" for key, value in runs[-1].items()
            ),
            flush=True,
        )
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    machine = describe_machine(args.device)
    print(f"\nN={N}, D={D}, V={V}, float32, forward+backward; {machine}")
    print(
        f"medians of {args.runs} runs ({args.repeats} timed steps of "
        "each method per run); memory = peak added by one step"
    )
    print(
        f"load average (1 min) before the runs: median "
        f"{statistics.median(loads):.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'method':8} {'memory MiB':>11} {'time s':>8}")
    for m in METHODS:
        print(
            f"{m:8} {medians[f'memory {m}']:11.1f} {medians[f'time {m}']:8.3f}"
        )
    print(f"\n{'ce_lib / baseline':28} {'ratio':>7} {'goal':>7}  result")
    all_pass = True
    for figure, base, goal in GOALS:
        ratio = medians[f"{figure} ratio {base}"]
        ok = ratio <= goal
        all_pass &= ok
        print(
            f"{figure + ' / ' + base:28} {ratio:7.3f} "
            f"{'<=' + format(goal, '.3g'):>7}  {'pass' if ok else 'FAIL'}"
        )
    if args.write:
        record = {
            "machine": machine,
            "device": args.device,
            "size": {"N": N, "D": D, "V": V},
            "runs": args.runs,
            "repeats": args.repeats,
            "load_average": statistics.median(loads),
            "cpus": os.cpu_count(),
            "medians": medians,
            "per_run": runs,
        }
        os.makedirs(
            os.path.dirname(os.path.abspath(args.write)), exist_ok=True
        )
        with open(args.write, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
