"""The dry run stays readable at the edges of the spec's ranges: hour counts formatted for people (never a
300-digit number), and ASHA's expectation refusing settings with no rungs to stop at."""

from __future__ import annotations

import re

import pytest

from rft_fast.data.registry import DATASETS
from rft_fast.grid import format_plan, load_spec, plan
from rft_fast.grid.plan import asha_expected_epochs, format_hours
from rft_fast.models import REGISTRY
from rft_fast.train.config import LOSSES


@pytest.mark.parametrize(
    "hours, text",
    [
        (0.0, "0.0 h"),
        (2.5, "2.5 h"),
        (3360.0, "3,360.0 h"),  # docs/grid.md's study figure
        (8766.0, "8,766.0 h (~1.0 years)"),
        (123_456.0, "123,456 h (~14.1 years)"),
        (42_048_000.0, "42,048,000 h (~4,796.7 years)"),
        (1.26e12, "1.26e+12 h (~1.44e+08 years)"),
        (1e300, "1e+300 h (~1.14e+296 years)"),
        (float("inf"), "inf h"),
    ],
)
def test_format_hours(hours, text):
    assert format_hours(hours) == text


def test_the_largest_grid_the_ranges_allow_prints_short_numbers():
    """Every backbone, loss, protocol and dataset at the longest budget (a year per configuration)."""
    spec = load_spec(
        {
            "backbones": list(REGISTRY),
            "losses": list(LOSSES),
            "protocols": ["FFT-50", "FFT-5", "LP-50"],
            "datasets": list(DATASETS),
            "random_init": True,
            "search": {"lr_head": {"loguniform": [1e-6, 10]}},
            "budget_minutes": 525_600,
            "num_samples": 100_000,
            "store": "s.sqlite",
            "out_dir": "o",
            "asha": {"grace_period": 10_000, "reduction_factor": 1.1},
            "fixed": {"epochs": 10_000},
        }
    )
    summary = plan(spec, gpus=8)
    n = len(REGISTRY) * len(LOSSES) * 3 * len(DATASETS)
    assert summary["n_configs"] == n and summary["budget_bound_hours"] == pytest.approx(n * 8760)
    text = format_plan(summary)
    assert f"{n * 8760:,} h (~" in text
    assert max(len(run) for run in re.findall(r"[\d,.]+", text)) <= 16, text


@pytest.mark.parametrize("args", [(50, 1, 1.0), (50, 1, 0.5), (50, 0, 2), (0, 1, 2), (50, 1, 2, 0)])
def test_asha_expected_epochs_refuses_settings_without_rungs(args):
    with pytest.raises(ValueError, match="asha_expected_epochs needs"):
        asha_expected_epochs(*args)


def test_asha_expected_epochs_at_the_edges_of_the_ranges():
    assert asha_expected_epochs(10_000, 1, 1.1) == pytest.approx(asha_expected_epochs(10_000, 1, 1.1))
    assert 1 <= asha_expected_epochs(10_000, 1, 1.1) < 10_000
    assert asha_expected_epochs(10_000, 10_000, 100) == 10_000  # no rung below the epochs
