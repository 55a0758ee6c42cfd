"""`rft-fast bench ops`: every op x norm x backend against the torch eager reference, in one run.

For each case: median time, effective GB/s (bytes of the inputs read once plus outputs written once,
divided by time), the ratio to torch eager (the torch backend with check=False) measured in the same run, and
the device's copy bandwidth (`y.copy_(x)` of the same number of bytes) as the ceiling to compare GB/s against.
Every kernel backend is timed twice: check=False (the attacks' inner loops) and the default call (check=True,
the data checks folded into the kernel's pass), with the default call's overhead over check=False; the summary
states the target of issue 18: the default-call pgd_step Linf / L2 at 64x3x224x224 float32 >= 4x torch eager.
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
# The default call's target: pgd_step of these norms at least this many times faster than torch eager.
DEFAULT_CALL_TARGET = (("pgd_step", ("Linf", "L2"), (64, 3, 224, 224), "float32"), 4.0)


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
    check: bool = False  # the default call (check=True) rather than check=False
    vs_torch: float | None = None  # torch eager time (check=False) / this time (speed-up over eager)
    check_overhead_pct: float | None = None  # check=True: its time over check=False's, in percent
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


def call(op: str, norm: str, backend: str, a: dict[str, object], check: bool = False) -> Callable[[], object]:
    """The op on the inputs; check=True is the default call (data checks), check=False the inner loops' call."""
    if op == "project":
        return lambda: ops.project(a["x_adv"], a["x"], a["eps"], norm, backend=backend, check=check)
    if op == "pgd_step":
        return lambda: ops.pgd_step(
            a["x_adv"], a["x"], a["grad"], a["step"], a["eps"], norm, backend=backend, check=check
        )
    return lambda: ops.apgd_step(
        a["x_adv"], a["x_prev"], a["x"], a["grad"], a["step"], a["eps"], norm, backend=backend, check=check
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
                case_rows: list[Row] = []
                unchecked = {}
                # Kernel backends twice (check=False, then the default call); torch eager once, with check=False.
                for backend, check in [(b, c) for b in chosen for c in (False, True) if not (c and b == "torch")]:
                    sec = time_fn(call(op, norm, backend, a, check), dev, min_seconds=min_seconds)
                    gbps = (reads + writes) * numel * elem / sec / 1e9
                    row = Row(op, norm, backend, tuple(shape), _dtype_name(dtype), sec * 1e3, gbps, copy, check)
                    if check:
                        row.check_overhead_pct = 100.0 * (sec / unchecked[backend] - 1.0)
                    else:
                        unchecked[backend] = sec
                    case_rows.append(row)
                for r in case_rows:
                    r.vs_torch = unchecked["torch"] / (r.median_ms / 1e3)
                rows += case_rows
    return {"meta": environment(dev, " ".join(sys.argv)), "rows": [asdict(r) for r in rows]}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# fmt: off
COLUMNS = (
    ("op", "op", "<10"), ("norm", "norm", "<5"), ("backend", "backend", "<7"), ("check", "check", "<5"),
    ("shape", "shape", "<16"), ("dtype", "dtype", "<8"), ("median_ms", "ms", ">9.3f"), ("gbps", "GB/s", ">8.2f"),
    ("copy_gbps", "copy GB/s", ">9.2f"), ("pct_of_copy", "%copy", ">6.1f"), ("vs_torch", "x torch", ">8.2f"),
    ("check_overhead_pct", "check %", ">8.1f"),
)
# fmt: on


def default_call_summary(rows: list[dict[str, object]]) -> list[str]:
    """One line per case of DEFAULT_CALL_TARGET that was measured: the fastest default call (check=True) of a
    kernel backend against torch eager, and whether it meets the target."""
    (op, norms, shape, dtype), target = DEFAULT_CALL_TARGET
    lines = []
    for norm in norms:
        found = [
            r
            for r in rows
            if r["check"] and (r["op"], r["norm"], tuple(r["shape"]), r["dtype"]) == (op, norm, shape, dtype)
        ]
        if found:
            best = max(found, key=lambda r: r["vs_torch"])
            verdict = "meets" if best["vs_torch"] >= target else "misses"
            lines.append(
                f"default-call {op} {norm} {'x'.join(map(str, shape))} {dtype}: {best['backend']} "
                f"{best['vs_torch']:.2f}x torch eager ({verdict} the target >= {target:g}x)"
            )
    return lines


def format_table(result: dict[str, object]) -> str:
    """The rows as a fixed-width table, then the default-call summary (when its shape was measured)."""
    table = common.format_table(result["meta"], result["rows"], COLUMNS)
    return "\n".join([table, *default_call_summary(result["rows"])])
