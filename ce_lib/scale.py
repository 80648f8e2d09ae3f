"""Tools for cross-entropy at scale (chapter 6,
``chapters/06-cross-entropy-at-scale.ipynb``).

Three things the chapter shows and the tests use:

- :class:`LiveBytes`, which counts the bytes of the tensors a computation
  allocates and keeps alive, and their peak: the memory an allocator must
  provide, the same on every machine, and it works on the ``meta`` device,
  so it can size a step that would not fit;
- the log-sum-exp of a row computed piece by piece, written like its
  equations: each piece gives its largest logit m and the sum s of
  e^{z - m}, and two pieces merge exactly (:func:`merge_logsumexp`);
- a way to try :func:`ce_lib.vocab_parallel_cross_entropy` on one machine:
  :func:`run_local_group` starts R processes joined in a gloo group over
  127.0.0.1, and :func:`vocab_parallel_step` is what each of them runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue as queue_module
import socket
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ce_lib.parallel import vocab_parallel_cross_entropy

# ---- memory ----


class LiveBytes(TorchDispatchMode):
    """Inside ``with LiveBytes() as memory:``, count the bytes of every
    tensor storage that torch operations allocate, until it is freed:
    ``memory.live`` now and ``memory.peak``, the most at any moment.

    Tensors that exist before the block (inputs, weights) are not counted,
    nor are views and in-place results (they allocate nothing). Autograd's
    backward runs through the same operations, so a training step's peak
    includes what backward allocates. This is what an allocator must
    provide, without its caching or fragmentation; on the ``meta`` device
    it sizes a computation without running it.

    Examples:
        >>> import torch
        >>> from ce_lib.scale import LiveBytes
        >>> x = torch.empty(1000, 1000, device="meta")  # 4 MB, no data
        >>> with LiveBytes() as memory:
        ...     y = x @ x  # 4 MB
        ...     z = torch.exp(y)  # 4 MB more
        ...     del y  # back to 4 MB
        >>> memory.peak, memory.live
        (8000000, 4000000)
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {
            t.untyped_storage()._cdata
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, Tensor)
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in given or key in self._counted:
                continue  # a view, an in-place or out= result
            self._counted.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, storage.nbytes())
        return out

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._counted.discard(key)


# ---- log-sum-exp in pieces ----


def logsumexp_stats(z: Tensor) -> tuple[Tensor, Tensor]:
    """(m, s) of each row of one piece: m = max_c z_c, s = sum_c e^{z_c - m}.

    The piece's log-sum-exp is m + log s. The class axis is the last. A row
    whose logits are all -inf (masked classes) has m = -inf and s = 0: the
    shift is 0 where m is not finite, so e^{-inf} = 0 and never
    e^{-inf + inf} = NaN.
    """
    m = z.amax(dim=-1)
    shift = torch.where(torch.isfinite(m), m, 0.0)
    s = torch.exp(z - shift[..., None]).sum(dim=-1)
    return m, s


def merge_logsumexp(
    a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """The (m, s) of two pieces together, from theirs:
    m = max(m_a, m_b), s = s_a e^{m_a - m} + s_b e^{m_b - m}.

    Exact: both sides equal sum_c e^{z_c - m} over the union. Where m is
    not finite (both pieces all -inf) the shift is 0, as in
    ``logsumexp_stats``, so the result is m = -inf, s = 0, not NaN.

    Examples:
        >>> import torch
        >>> from ce_lib.scale import logsumexp_stats, merge_logsumexp
        >>> z = torch.tensor([1.0, 5.0, 2.0, 3.0], dtype=torch.float64)
        >>> a, b = logsumexp_stats(z[:2]), logsumexp_stats(z[2:])
        >>> m, s = merge_logsumexp(a, b)
        >>> round((m + torch.log(s)).item(), 12)
        5.185182452604
        >>> round(torch.logsumexp(z, dim=0).item(), 12)
        5.185182452604
    """
    (m_a, s_a), (m_b, s_b) = a, b
    m = torch.maximum(m_a, m_b)
    shift = torch.where(torch.isfinite(m), m, 0.0)
    return m, s_a * torch.exp(m_a - shift) + s_b * torch.exp(m_b - shift)


def logsumexp_in_pieces(z: Tensor, pieces: int) -> Tensor:
    """log sum_c e^{z_c} of each row, from ``pieces`` slices of the class
    axis merged one after the other (the last axis). Logits may be -inf
    (masked), even a whole piece or row: as ``torch.logsumexp``."""
    stats = None
    for piece in torch.tensor_split(z, pieces, dim=-1):
        if piece.shape[-1] == 0:
            continue
        new = logsumexp_stats(piece)
        stats = new if stats is None else merge_logsumexp(stats, new)
    m, s = stats
    return m + torch.log(s)


# ---- several processes on one machine ----


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _loopback_interface() -> str | None:
    """The name of the loopback interface ('lo' on Linux, 'lo0' on macOS)."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in names:
        if name.startswith("lo"):
            return name
    return None


def _rank_main(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    port: int,
    args: tuple[Any, ...],
    results: Any,
    timeout: float,
) -> None:
    """One process of :func:`run_local_group`: join, run, send the result."""
    try:
        interface = _loopback_interface()
        if interface and "GLOO_SOCKET_IFNAME" not in os.environ:
            os.environ["GLOO_SOCKET_IFNAME"] = interface  # loopback only
        torch.set_num_threads(1)  # R processes share the machine's cores
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        buffer = io.BytesIO()
        torch.save(result, buffer)  # plain bytes: nothing shared to outlive
        results.put((rank, True, buffer.getvalue()))
    except BaseException:  # report it; the parent raises
        results.put((rank, False, traceback.format_exc()))


def _forkserver_context() -> Any:
    """The forkserver context, preloading this module (and so torch)."""
    context = torch.multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ce_lib.scale"])
    return context


def warm_up_local_group() -> None:
    """Start the server that :func:`run_local_group` forks its processes
    from, now and in the background: it imports torch once, while the
    caller goes on, so that a later group starts sooner. Nothing happens
    where the platform has no 'forkserver' start method."""
    if "forkserver" in torch.multiprocessing.get_all_start_methods():
        _forkserver_context()
        import multiprocessing.forkserver

        multiprocessing.forkserver.ensure_running()


def run_local_group(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 120.0,
    start_method: str | None = None,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes
    joined in one gloo process group over 127.0.0.1; return the results,
    by rank.

    ``fn`` must be importable (defined in a module, not in a notebook), and
    ``args`` and the results picklable (tensors are fine). The processes
    start fresh (``start_method``: by default 'forkserver', which imports
    torch once for all of them, where the platform has it, else 'spawn')
    and use one thread each. A rank that
    raises makes this raise ``RuntimeError`` with its traceback; so does a
    group that has not finished after ``timeout`` seconds.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1; got {world_size}")
    if start_method is None:
        methods = torch.multiprocessing.get_all_start_methods()
        start_method = "forkserver" if "forkserver" in methods else "spawn"
    if start_method == "forkserver":  # import torch once, in the server
        context = _forkserver_context()
    else:
        context = torch.multiprocessing.get_context(start_method)
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(
            target=_rank_main,
            args=(fn, rank, world_size, port, args, results, timeout),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    answers: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(answers) < world_size:
            left = deadline - time.monotonic()
            try:
                rank, ok, payload = results.get(timeout=max(left, 0.01))
            except queue_module.Empty:
                raise RuntimeError(
                    f"the group of {world_size} processes did not finish "
                    f"within {timeout:g} s"
                ) from None
            if not ok:
                raise RuntimeError(f"rank {rank} failed:\n{payload}")
            answers[rank] = torch.load(io.BytesIO(payload), weights_only=False)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
    return [answers[rank] for rank in range(world_size)]


@contextlib.contextmanager
def count_collectives() -> Iterator[list[dict[str, Any]]]:
    """Record every ``torch.distributed.all_reduce`` made inside the block:
    a list of {'op', 'dtype', 'elements', 'bytes'} entries."""
    calls: list[dict[str, Any]] = []
    original = dist.all_reduce

    def counting(tensor: Tensor, op: Any = dist.ReduceOp.SUM, *a, **k):
        calls.append({
            "op": str(op).rsplit(".", 1)[-1],
            "dtype": str(tensor.dtype).replace("torch.", ""),
            "elements": tensor.numel(),
            "bytes": tensor.numel() * tensor.element_size(),
        })  # fmt: skip
        return original(tensor, op, *a, **k)

    dist.all_reduce = counting
    try:
        yield calls
    finally:
        dist.all_reduce = original


def vocab_parallel_step(
    rank: int,
    world_size: int,
    logits: Tensor,
    target: Tensor,
    settings: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """What one rank does, for each keyword set in ``settings``: take its
    slice of the classes from the full ``logits`` (N, V), compute
    :func:`ce_lib.vocab_parallel_cross_entropy`, backpropagate, and report
    the loss, the gradient of its slice and the all-reduces it made in
    forward and in backward.

    A setting may hold ``upstream``: the gradient to backpropagate (a
    number, or a vector for ``reduction='none'``; default 1 or ones).
    """
    width = logits.shape[1] // world_size
    columns = slice(rank * width, (rank + 1) * width)
    out = []
    for setting in settings:
        setting = dict(setting)
        upstream = setting.pop("upstream", None)
        z = logits[:, columns].clone().requires_grad_()
        with count_collectives() as forward_calls:
            loss = vocab_parallel_cross_entropy(z, target, **setting)
        if upstream is None:
            upstream = torch.ones_like(loss)
        with count_collectives() as backward_calls:
            loss.backward(torch.as_tensor(upstream, dtype=loss.dtype))
        out.append({
            "loss": loss.detach(),
            "grad": z.grad,
            "forward": forward_calls,
            "backward": backward_calls,
        })  # fmt: skip
    return out
