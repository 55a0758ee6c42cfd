"""`rft-fast bench ops`: every op x norm x backend against the torch eager reference, in one run.

For each case: median time, effective GB/s (bytes of the inputs read once plus outputs written once,
divided by time), the ratio to the torch backend measured in the same run, and the device's copy
bandwidth (`y.copy_(x)` of the same number of bytes) as the ceiling to compare GB/s against.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from rft_fast import ops
from rft_fast.bench import common
from rft_fast.bench.common import copy_bandwidth, environment, time_fn

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
        return lambda: ops.pgd_step(
            a["x_adv"], a["x"], a["grad"], a["step"], a["eps"], norm, backend=backend, check=False
        )
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
                    rows.append(
                        Row(op, norm, backend, tuple(shape), str(dtype).replace("torch.", ""), sec * 1e3, gbps, copy)
                    )
                for r in rows[-len(chosen) :]:
                    r.vs_torch = measured["torch"] / (r.median_ms / 1e3)
    return {"meta": environment(dev, " ".join(sys.argv)), "rows": [asdict(r) for r in rows]}


# fmt: off
COLUMNS = (
    ("op", "op", "<10"), ("norm", "norm", "<5"), ("backend", "backend", "<7"), ("shape", "shape", "<16"),
    ("dtype", "dtype", "<8"), ("median_ms", "ms", ">9.3f"), ("gbps", "GB/s", ">8.2f"),
    ("copy_gbps", "copy GB/s", ">9.2f"), ("pct_of_copy", "%copy", ">6.1f"), ("vs_torch", "x torch", ">8.2f"),
)
# fmt: on


def format_table(result: dict[str, object]) -> str:
    """The rows as a fixed-width table."""
    return common.format_table(result["meta"], result["rows"], COLUMNS)
