"""pytest-benchmark suite: one adversarial training step, rft-fast vs the reference loop (`rft-fast bench train`
in pytest form).

    .venv/bin/pytest bench/test_bench_train.py --benchmark-json bench/results/train-pytest-<device>.json
Batch and image size via RFT_BENCH_BATCH / RFT_BENCH_SIZE (default 64 / 224 on GPU, 8 / 64 on CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from rft_fast.bench import common, train_bench

pytest.importorskip("timm")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = int(os.environ.get("RFT_BENCH_BATCH", train_bench.defaults(DEVICE)[0]))
SIZE = int(os.environ.get("RFT_BENCH_SIZE", train_bench.defaults(DEVICE)[1]))


@pytest.mark.parametrize("dtype", tuple(train_bench.DTYPES))
@pytest.mark.parametrize("impl", train_bench.IMPLS)
@pytest.mark.parametrize("loss", train_bench.LOSSES)
@pytest.mark.parametrize("model_name", train_bench.DEFAULT_MODELS)
def test_train_step(benchmark, model_name, loss, impl, dtype):
    model = common.make_model(model_name, SIZE, 10, DEVICE)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen).to(DEVICE)
    y = torch.randint(0, 10, (BATCH,), generator=gen).to(DEVICE)
    step = train_bench.step_fn(impl, loss, model, x, y, 10, train_bench.DTYPES[dtype])

    run = common.synced(step, DEVICE)

    benchmark.extra_info.update(batch=BATCH, size=SIZE, device=str(DEVICE))
    benchmark.pedantic(run, rounds=2, warmup_rounds=1)
