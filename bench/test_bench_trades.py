"""pytest-benchmark suite: one TRADES step, standard vs memory-saving, per precision (rft-fast bench trades in
pytest form).

    .venv/bin/pytest bench/test_bench_trades.py --benchmark-json bench/results/trades-pytest-<device>.json
Batch and image size via RFT_BENCH_BATCH / RFT_BENCH_SIZE (default 64 / 224 on GPU, 4 / 64 on CPU); precisions
via RFT_BENCH_AMP (comma-separated names of trades_bench.AMP_DTYPES, default "none,bf16"). Each case also
records its saved-activation peak (extra_info saved_bytes), the memory measure of `bench trades` on CPU.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from rft_fast import reference
from rft_fast.bench import common, trades_bench
from rft_fast.bench.memory import saved_activation_peak
from rft_fast.losses import TRADESLoss

pytest.importorskip("timm")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = int(os.environ.get("RFT_BENCH_BATCH", 64 if DEVICE.type == "cuda" else 4))
SIZE = int(os.environ.get("RFT_BENCH_SIZE", 224 if DEVICE.type == "cuda" else 64))
AMPS = tuple(os.environ.get("RFT_BENCH_AMP", "none,bf16").split(","))


@pytest.mark.parametrize("amp", AMPS)
@pytest.mark.parametrize("variant", tuple(trades_bench.VARIANTS))
@pytest.mark.parametrize("model_name", trades_bench.DEFAULT_MODELS)
def test_trades_step(benchmark, model_name, variant, amp):
    model = common.make_model(model_name, SIZE, 10, DEVICE)
    attack = functools.partial(reference.pgd_attack, eps=8 / 255, step_size=2 / 255, steps=10, loss="kl")
    step = trades_bench.step_fn(
        model, TRADESLoss(attack, memory_saving=trades_bench.VARIANTS[variant]), BATCH, SIZE, DEVICE, amp
    )

    run = common.synced(step, DEVICE)

    benchmark.extra_info.update(batch=BATCH, size=SIZE, device=str(DEVICE), amp=amp)
    benchmark.pedantic(run, rounds=2, warmup_rounds=1)
    benchmark.extra_info["saved_bytes"] = saved_activation_peak(step)
