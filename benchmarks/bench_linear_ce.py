"""Peak memory and time of the output layer + cross-entropy, three ways.

At N = 8192 rows, D = 512 hidden units and V = 32768 classes, float32, one
training step (forward, then backward to the hidden states and the output
weights) of:

- naive: ``F.cross_entropy(x @ W.T, t)``, which holds all N x V logits;
- torch: torch 2.13's chunked path, ``F.linear_cross_entropy(x, W, t,
  options=torch.nn.LinearCrossEntropyOptions())``;
- ce_lib: ``ce_lib.linear_cross_entropy(x, W, t)``.

Memory (measured once: it does not move between runs): each method runs in
its own fresh process, which measures the peak memory the step adds to what
the inputs already take: on the CPU the peak resident set size (VmHWM,
reset just before the step) minus the resident set before it; on a GPU
``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before it.
Both include the gradients of x and W that every method must produce
(N x D + V x D floats, 80 MiB here). Time: a fresh process runs the three
methods in turn, ``--repeats`` times each (the order alternates, so they
share the machine's load); a run reports each method's mean step time and
the ratios of those means, so a run's ratios are the ratios of its times.
The time measurement is repeated ``--runs`` times, and the 1-min load
average is sampled every second while each run's timed steps execute.

Run ``python benchmarks/bench_linear_ce.py`` (about 7 minutes on two
cores); ``--device cuda`` measures a GPU instead and skips cleanly when
there is none; ``--write benchmarks/results/linear_ce_cpu.json`` stores the
figures that chapter 6 shows. Exits with status 1 when a goal is missed
(by the median over runs). Not a test: timings depend on the machine and on
what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
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


def measure_memory(args: argparse.Namespace) -> dict:
    """Peak memory one step of each method adds, each in a fresh process."""
    return {
        m: run_child(args, "--child-memory", m)["added_bytes"] / MiB
        for m in METHODS
    }


def one_run(args: argparse.Namespace) -> dict:
    """Times of one run (one fresh process), the ratios of those times, and
    the 1-min load average sampled every second while it ran."""
    samples: list[float] = []
    done = threading.Event()

    def sample_load() -> None:
        while not done.is_set():
            samples.append(os.getloadavg()[0])
            done.wait(1.0)

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    try:
        times = run_child(args, "--child-time", "--repeats", str(args.repeats))
    finally:
        done.set()
        sampler.join()
    means = {m: statistics.fmean(times["times"][m]) for m in METHODS}
    figures = {f"time {m}": means[m] for m in METHODS}
    for base in ("naive", "torch"):
        figures[f"time ratio {base}"] = means["ce_lib"] / means[base]
    figures["load mean"] = statistics.fmean(samples)
    figures["load min"], figures["load max"] = min(samples), max(samples)
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
        help="timed runs, each in a fresh process",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
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

    memory = measure_memory(args)
    print(
        "memory added (MiB): "
        + ", ".join(f"{m} {memory[m]:.1f}" for m in METHODS),
        flush=True,
    )
    runs = []
    for k in range(args.runs):
        runs.append(one_run(args))
        print(
            f"run {k + 1}/{args.runs}: "
            + ", ".join(
                f"{key} {value:.3g}" for key, value in runs[-1].items()
            ),
            flush=True,
        )
    machine = describe_machine(args.device)
    print(f"\nN={N}, D={D}, V={V}, float32, forward+backward; {machine}")
    print(
        f"{args.runs} runs of {args.repeats} timed steps of each method; "
        "time = mean step time of a run"
    )
    print(f"{'run':>3} {'load':>5} " + " ".join(f"{m:>7}" for m in METHODS)
          + f" {'/naive':>7} {'/torch':>7}")  # fmt: skip
    for k, r in enumerate(runs):
        print(
            f"{k + 1:3d} {r['load mean']:5.1f} "
            + " ".join(f"{r[f'time {m}']:7.2f}" for m in METHODS)
            + f" {r['time ratio naive']:7.3f} {r['time ratio torch']:7.3f}"
        )
    ratios = {
        ("memory", base): memory["ce_lib"] / memory[base]
        for base in ("naive", "torch")
    }
    for base in ("naive", "torch"):
        ratios["time", base] = statistics.median(
            r[f"time ratio {base}"] for r in runs
        )
    print(f"\n{'ce_lib / baseline':28} {'ratio':>7} {'goal':>7}  result")
    all_pass = True
    for figure, base, goal in GOALS:
        ratio = ratios[figure, base]
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
            "cpus": os.cpu_count(),
            "memory": memory,
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
