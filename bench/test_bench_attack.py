"""pytest-benchmark suite: APGD-CE per model x dtype x implementation (rft-fast bench attack in pytest form).

    .venv/bin/pytest bench/test_bench_attack.py --benchmark-json bench/results/attack-pytest-<device>.json
Batch and image size via RFT_BENCH_BATCH / RFT_BENCH_SIZE (default 128 / 224 on GPU, 4 / 64 on CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from rft_fast.bench import attack_bench, common
from rft_fast.bench.common import make_model

pytest.importorskip("timm")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = int(os.environ.get("RFT_BENCH_BATCH", 128 if DEVICE.type == "cuda" else 4))
SIZE = int(os.environ.get("RFT_BENCH_SIZE", 224 if DEVICE.type == "cuda" else 64))


@pytest.fixture(scope="module", params=attack_bench.DEFAULT_MODELS)
def model_batch(request):
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with torch.random.fork_rng(devices=[DEVICE] if DEVICE.type == "cuda" else []):
        torch.manual_seed(0)
        model = make_model(request.param, SIZE, 10, DEVICE).eval()
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    with torch.no_grad():
        y = model(x).argmax(1)
    return request.param, model, x, y


@pytest.mark.parametrize("impl", attack_bench.available_impls())
@pytest.mark.parametrize("dtype", tuple(attack_bench.DTYPES))
def test_apgd_ce(benchmark, model_batch, dtype, impl):
    name, model, x, y = model_batch
    fn = attack_bench.attack_fn(
        impl, model, x, y, norm="Linf", eps=4 / 255, steps=10, restarts=1, amp_dtype=attack_bench.DTYPES[dtype]
    )

    run = common.synced(fn, DEVICE)

    benchmark.extra_info.update(model=name, batch=BATCH, size=SIZE, device=str(DEVICE), dtype=dtype, impl=impl)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
