"""`rft-fast bench kl`: the TRADES objective forward + backward per backend against torch eager.

Bytes per call (ideal): both logit tensors read in the forward, read again and both gradients written in
the backward (6 x N x C elements); GB/s is compared with the copy bandwidth of the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from rft_fast import ops
from rft_fast.bench import common

DEFAULT_CLASSES = (10, 102, 1000, 21843)
DEFAULT_BATCHES = (64, 256)
# fmt: off
COLUMNS = (
    ("backend", "backend", "<7"), ("n", "N", ">5"), ("c", "C", ">6"), ("dtype", "dtype", "<8"),
    ("median_ms", "ms", ">9.3f"), ("gbps", "GB/s", ">8.2f"), ("copy_gbps", "copy GB/s", ">9.2f"),
    ("pct_of_copy", "%copy", ">6.1f"), ("vs_torch", "x torch", ">8.2f"),
)
# fmt: on


def bench_backends(device: torch.device) -> list[str]:
    return [b for b in ops.backends(device, "trades_kl") if not (b == "triton" and device.type == "cpu")]


def fwd_bwd(la: torch.Tensor, lc: torch.Tensor, y: torch.Tensor, backend: str) -> Callable[[], object]:
    la, lc = la.clone().requires_grad_(), lc.clone().requires_grad_()

    def run() -> None:
        loss = ops.trades_objective(lc, la, y, 1.0, backend=backend, check=False)
        torch.autograd.grad(loss, (la, lc))

    return run


def run(
    device: str = "cpu",
    classes: tuple[int, ...] = DEFAULT_CLASSES,
    batches: tuple[int, ...] = DEFAULT_BATCHES,
    dtype: torch.dtype = torch.float32,
    backends: list[str] | None = None,
    min_seconds: float = 0.3,
) -> dict[str, object]:
    dev = torch.device(device)
    chosen = list(dict.fromkeys([*(backends or bench_backends(dev)), "torch"]))
    rows = []
    for n in batches:
        for c in classes:
            gen = torch.Generator().manual_seed(0)
            lc = (torch.randn(n, c, generator=gen) * 3).to(device=dev, dtype=dtype)
            la = lc + torch.randn(n, c, generator=gen).to(device=dev, dtype=dtype)
            y = torch.randint(0, c, (n,), generator=gen).to(dev)
            copy = common.copy_bandwidth(3 * n * c, dtype, dev)  # 6 N C bytes moved, like the op
            times = {b: common.time_fn(fwd_bwd(la, lc, y, b), dev, min_seconds=min_seconds) for b in chosen}
            for b, sec in times.items():
                gbps = 6 * n * c * la.element_size() / sec / 1e9
                rows.append(
                    {
                        "backend": b,
                        "n": n,
                        "c": c,
                        "dtype": str(dtype).replace("torch.", ""),
                        "median_ms": sec * 1e3,
                        "gbps": gbps,
                        "copy_gbps": copy,
                        "pct_of_copy": 100 * gbps / copy,
                        "vs_torch": times["torch"] / sec,
                    }
                )
    return {"meta": common.environment(dev, " ".join(sys.argv)), "rows": rows}


def format_table(result: dict[str, object]) -> str:
    return common.format_table(result["meta"], result["rows"], COLUMNS)
