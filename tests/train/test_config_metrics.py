"""REPORTED_METRICS (what the grid lets ASHA rank trials by) is what `fit` reports each epoch: one tiny run
(1 micro-batch of digits3 at 8 px, 6 validation images) checks every listed metric is in its row, a number."""

from __future__ import annotations

import math

import tiny

from rft_fast.train import TrainConfig, fit
from rft_fast.train.config import REPORTED_METRICS


def test_fit_reports_every_metric_the_grid_can_rank_by():
    config = TrainConfig(
        backbone="tiny_resnet",
        dataset="digits3",
        random_init=True,
        protocol="FFT-5",
        epochs=1,
        image_size=8,
        batch_size=8,
        effective_batch=8,
        max_batches=1,
        val_samples=6,
        attack_steps=1,
        val_steps=1,
        workers=0,
        device="cpu",
    )
    with tiny.registered():
        (row,) = fit(config).metrics
    missing = sorted(set(REPORTED_METRICS) - set(row))
    assert not missing, f"fit no longer reports {missing}: update REPORTED_METRICS in rft_fast/train/config.py"
    assert all(isinstance(row[m], float) and math.isfinite(row[m]) for m in REPORTED_METRICS)
