"""The study's report from the results store: Borda count with medals (overall and per size class), per-dataset
rankings, group means, TRADES vs Classic AT and tier-1 odds ratios (Fisher's exact test), as markdown with PNG
plots (`rft-fast report`).

    from rft_fast import report
    rows = report.rows_from_store(store, mode="standard")
    report.write(rows, "report", mode="standard", failures=store.stages(status="failed"))

Every accuracy in the report's tables carries a 95% Wilson score interval from its n (`wilson`).
"""

from rft_fast.report.analyses import (
    FEATURES,
    GROUPINGS,
    borda,
    group_means,
    size_medals,
    tier1,
    tier1_odds,
    trades_vs_classic,
)
from rft_fast.report.intervals import wilson
from rft_fast.report.markdown import write
from rft_fast.report.rows import ACCURACIES, Row, rows_from_store

__all__ = [
    "ACCURACIES",
    "FEATURES",
    "GROUPINGS",
    "Row",
    "rows_from_store",
    "borda",
    "size_medals",
    "trades_vs_classic",
    "tier1",
    "tier1_odds",
    "group_means",
    "wilson",
    "write",
]
