"""Grids of fine-tuning configurations: the spec (YAML), its expansion, and dry-run planning.

The Ray Tune runner lives in rft_fast.grid.runner and is imported on its own (it needs Ray).
"""

from rft_fast.grid.plan import (
    SPLIT_SIZES,
    asha_expected_epochs,
    concurrent_trials,
    estimate,
    format_plan,
    plan,
    read_bench,
)
from rft_fast.grid.spec import (
    ASHA,
    BACKBONE_DIMS,
    Config,
    EvalSpec,
    GridSpec,
    Resources,
    SearchDim,
    check_paths,
    expand,
    load_spec,
    search_space,
    weights_path,
)

__all__ = [
    "SPLIT_SIZES",
    "asha_expected_epochs",
    "concurrent_trials",
    "estimate",
    "format_plan",
    "plan",
    "read_bench",
    "ASHA",
    "BACKBONE_DIMS",
    "Config",
    "EvalSpec",
    "GridSpec",
    "Resources",
    "SearchDim",
    "check_paths",
    "expand",
    "load_spec",
    "search_space",
    "weights_path",
]
