"""`rft-fast report`: the study's analyses (Borda, odds ratios, groups, plots) from the results store."""

from __future__ import annotations

import argparse
from pathlib import Path

from rft_fast.cli.options import Refused


def _report(args: argparse.Namespace) -> int:
    from rft_fast import report
    from rft_fast.results import Store
    from rft_fast.results.export import attack_modes

    if not Path(args.store).is_file():
        raise Refused(f"no results store at {args.store}")
    with Store(args.store) as store:
        modes = attack_modes(store)
        mode = args.mode or (modes[0] if len(modes) == 1 else "standard")
        rows = report.rows_from_store(store, mode=mode)
        failures = store.stages(status="failed")
    if not rows:
        failed = f" ({len(failures)} failed stage(s): `rft-fast results --failures`)" if failures else ""
        raise Refused(f"{args.store} holds no {mode} results yet{failed}")
    path = report.write(rows, Path(args.out), mode=mode, failures=failures)
    print(f"wrote {path} (attack mode {mode}, {len(rows)} configurations, {len(failures)} failed stages)")
    others = [m for m in modes if m != mode]
    if others:
        print(f"the store also holds {others[0]} attack rows: `rft-fast report --mode {others[0]}` reports those")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser(
        "report",
        help="the study's analyses from the store: Borda, odds ratios, groups, plots",
        description="Writes OUT/report.md and PNG plots from the store's results (works on partial results).",
    )
    rep.add_argument("--store", default="results.sqlite")
    rep.add_argument("--out", default="report", help="output folder (default ./report)")
    rep.add_argument(
        "--mode",
        choices=["standard", "fast"],
        help="which AutoAttack rows to use (default: the mode the store holds; standard when it holds both)",
    )
    rep.set_defaults(func=_report)
