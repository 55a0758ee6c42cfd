"""pytest-benchmark suite: TRADES objective forward+backward per backend (rft-fast bench kl in pytest form).

.venv/bin/pytest bench/test_bench_kl.py --benchmark-json bench/results/kl-pytest-<device>.json
"""

from __future__ import annotations

import pytest
import torch

from rft_fast.bench import common, kl_bench

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("backend", kl_bench.bench_backends(DEVICE))
@pytest.mark.parametrize("c", kl_bench.DEFAULT_CLASSES)
@pytest.mark.parametrize("n", kl_bench.DEFAULT_BATCHES)
def test_trades_objective_fwd_bwd(benchmark, n, c, backend):
    gen = torch.Generator().manual_seed(0)
    lc = (torch.randn(n, c, generator=gen) * 3).to(DEVICE)
    la = lc + torch.randn(n, c, generator=gen).to(DEVICE)
    y = torch.randint(0, c, (n,), generator=gen).to(DEVICE)
    fn = kl_bench.fwd_bwd(la, lc, y, backend)

    run = common.synced(fn, DEVICE)

    benchmark.extra_info.update(n=n, c=c, device=str(DEVICE), backend=backend)
    benchmark(run)
