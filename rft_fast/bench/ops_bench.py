"""`rft-fast bench ops`: every op x norm x backend against the torch eager reference, in one run.

For each case: median time, effective GB/s (bytes of the inputs read once plus outputs written once,
divided by time), the ratio to the torch backend measured in the same run, and the device's copy
bandwidth (`y.copy_(x)` of the same number of bytes) as the ceiling to compare GB/s against.
"""
from __future__ import annotations

import datetime
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from rft_fast import ops

DEFAULT_SHAPES = ((64, 3, 224, 224), (256, 3, 32, 32))
# How many (N, D) tensors each op reads and writes (its ideal memory traffic).
TRAFFIC = {"project": (2, 1), "pgd_step": (3, 1), "apgd_step": (4, 2)}
EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}


@dataclass
class Row:
    op: str
    norm: str
    backend: str
    shape: tuple[int, ...]
    dtype: str
    median_ms: float
    gbps: float
    copy_gbps: float
    vs_torch: float | None = None  # torch time / this time (speed-up over eager)
    pct_of_copy: float = field(init=False)

    def __post_init__(self) -> None:
        self.pct_of_copy = 100.0 * self.gbps / self.copy_gbps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, *, min_reps: int = 3, min_seconds: float = 0.3) -> float:
    """Median seconds of fn() over at least min_reps runs and min_seconds total, after one warm-up."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def copy_bandwidth(numel: int, dtype: torch.dtype, device: torch.device) -> float:
    """GB/s of y.copy_(x) for `numel` elements (bytes read + written)."""
    src = torch.rand(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    seconds = time_fn(lambda: dst.copy_(src), device)
    return 2 * numel * src.element_size() / seconds / 1e9


def inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, norm: str) -> dict[str, object]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(shape, generator=gen).to(device=device, dtype=dtype)
    eps = EPS[norm]
    x_adv = ops.project(x + 0.1 * torch.randn(shape, generator=gen).to(device=device, dtype=dtype), x, eps, norm)
    x_prev = ops.project(x + 0.1 * torch.randn(shape, generator=gen).to(device=device, dtype=dtype), x, eps, norm)
    grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return {"x_adv": x_adv, "x_prev": x_prev, "x": x, "grad": grad, "eps": eps, "step": eps / 4}


def call(op: str, norm: str, backend: str, a: dict[str, object]) -> Callable[[], object]:
    if op == "project":
        return lambda: ops.project(a["x_adv"], a["x"], a["eps"], norm, backend=backend, check=False)
    if op == "pgd_step":
        return lambda: ops.pgd_step(a["x_adv"], a["x"], a["grad"], a["step"], a["eps"], norm, backend=backend, check=False)
    return lambda: ops.apgd_step(
        a["x_adv"], a["x_prev"], a["x"], a["grad"], a["step"], a["eps"], norm, backend=backend, check=False
    )


def bench_backends(device: torch.device) -> list[str]:
    """Backends worth timing: the interpreted Triton on CPU is a correctness tool, not a backend to time."""
    return [b for b in ops.backends(device) if not (b == "triton" and device.type == "cpu")]


def run(
    device: str = "cpu",
    shapes: tuple[tuple[int, ...], ...] = DEFAULT_SHAPES,
    dtype: torch.dtype = torch.float32,
    norms: tuple[str, ...] = ops.NORMS,
    op_names: tuple[str, ...] = tuple(TRAFFIC),
    backends: list[str] | None = None,
    min_seconds: float = 0.3,
) -> dict[str, object]:
    """Measures every case; returns {"meta": ..., "rows": [Row as dict, ...]}."""
    dev = torch.device(device)
    chosen = backends or bench_backends(dev)
    if "torch" not in chosen:
        chosen = [*chosen, "torch"]  # the reference every ratio is taken against
    rows: list[Row] = []
    for shape in shapes:
        numel = 1
        for s in shape:
            numel *= s
        copy = copy_bandwidth(numel, dtype, dev)
        elem = torch.tensor([], dtype=dtype).element_size()
        for norm in norms:
            a = inputs(shape, dtype, dev, norm)
            for op in op_names:
                reads, writes = TRAFFIC[op]
                measured = {}
                for backend in chosen:
                    sec = time_fn(call(op, norm, backend, a), dev, min_seconds=min_seconds)
                    measured[backend] = sec
                    gbps = (reads + writes) * numel * elem / sec / 1e9
                    rows.append(Row(op, norm, backend, tuple(shape), str(dtype).replace("torch.", ""), sec * 1e3, gbps, copy))
                for r in rows[-len(chosen):]:
                    r.vs_torch = measured["torch"] / (r.median_ms / 1e3)
    return {"meta": environment(dev, " ".join(sys.argv)), "rows": [asdict(r) for r in rows]}


def environment(device: torch.device, command: str) -> dict[str, object]:
    """Device, versions, date and command, stored with every benchmark result."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": name,
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "backends": ops.backends(device),
    }


def format_table(result: dict[str, object]) -> str:
    """A fixed-width table of the rows, one line per case."""
    meta = result["meta"]
    head = f"device: {meta['device']} ({meta['device_type']}, {meta['threads']} threads)  torch {meta['torch']}"
    cols = f"{'op':<10} {'norm':<5} {'backend':<7} {'shape':<18} {'dtype':<8} {'ms':>9} {'GB/s':>8} {'copy GB/s':>9} {'%copy':>6} {'x torch':>8}"
    lines = [head, cols, "-" * len(cols)]
    for r in result["rows"]:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"{r['op']:<10} {r['norm']:<5} {r['backend']:<7} {shape:<18} {r['dtype']:<8} {r['median_ms']:>9.3f} "
            f"{r['gbps']:>8.2f} {r['copy_gbps']:>9.2f} {r['pct_of_copy']:>6.1f} {r['vs_torch']:>8.2f}"
        )
    return "\n".join(lines)
