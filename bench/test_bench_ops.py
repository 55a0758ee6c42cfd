"""pytest-benchmark suite for the ops: providers {torch, cpp, triton} x op x norm x check, on the current device
(check=True: the default call, data checks folded into the kernel; the torch provider with check=False only).

    .venv/bin/pytest bench/test_bench_ops.py --benchmark-json bench/results/ops-pytest-<device>.json
Shape via RFT_BENCH_SHAPE (default 64x3x224x224 on GPU, 16x3x224x224 on CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from rft_fast.bench import common, ops_bench

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DEFAULT = "64x3x224x224" if DEVICE.type == "cuda" else "16x3x224x224"
SHAPE = tuple(int(s) for s in os.environ.get("RFT_BENCH_SHAPE", DEFAULT).split("x"))


PROVIDERS = [(b, c) for b in ops_bench.bench_backends(DEVICE) for c in (False, True) if not (c and b == "torch")]


@pytest.mark.parametrize(("backend", "check"), PROVIDERS, ids=[f"{b}-check{int(c)}" for b, c in PROVIDERS])
@pytest.mark.parametrize("norm", ("Linf", "L2", "L1"))
@pytest.mark.parametrize("op", tuple(ops_bench.TRAFFIC))
def test_op(benchmark, op, norm, backend, check):
    inputs = ops_bench.inputs(SHAPE, torch.float32, DEVICE, norm)
    fn = ops_bench.call(op, norm, backend, inputs, check)

    run = common.synced(fn, DEVICE)

    benchmark.extra_info.update(shape=SHAPE, device=str(DEVICE), backend=backend, check=check)
    benchmark(run)
