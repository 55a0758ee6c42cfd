"""pytest-benchmark suite: one augmented training epoch, torchvision ImageFolder + transforms vs rft-fast's decoded
cache + device augmentation (`rft-fast bench data` in pytest form).

    .venv/bin/pytest bench/test_bench_data.py --benchmark-json bench/results/data-pytest-<device>.json
Images, size and workers via RFT_BENCH_N / RFT_BENCH_SIZE / RFT_BENCH_WORKERS (default 256 / 224 / 2).
"""

from __future__ import annotations

import os

import pytest
import torch

from rft_fast.bench import data_bench
from rft_fast.data.loading import decoded_source

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
N = int(os.environ.get("RFT_BENCH_N", 256))
SIZE = int(os.environ.get("RFT_BENCH_SIZE", 224))
WORKERS = int(os.environ.get("RFT_BENCH_WORKERS", 2))
BATCH = 128


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return data_bench.write_jpegs(tmp_path_factory.mktemp("bench-data") / "pics", N, 256)


@pytest.mark.parametrize("impl", data_bench.IMPLS)
def test_data_epoch(benchmark, jpegs, impl):
    if impl == "torchvision":

        def epoch():
            return data_bench.torchvision_epoch(jpegs, SIZE, BATCH, WORKERS, DEVICE, seed=0)

    else:
        cache_dir = jpegs.parent / "decoded"
        train = data_bench.cached_split(jpegs, SIZE)
        decoded_source(train.base.dataset, cache_dir=cache_dir, workers=WORKERS)  # decode once, untimed

        def epoch():
            return data_bench.cached_epoch(train, BATCH, WORKERS, DEVICE, seed=0, epoch=1, cache_dir=cache_dir)

    benchmark.extra_info.update(n=N, size=SIZE, workers=WORKERS, device=str(DEVICE))
    images = benchmark.pedantic(epoch, rounds=2, warmup_rounds=1)
    benchmark.extra_info["images"] = images
