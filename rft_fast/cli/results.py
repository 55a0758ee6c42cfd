"""`rft-fast results`: the results store's rows (filtered; table, CSV or JSON) and `results import` of a
published study's table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rft_fast.cli.options import REFUSED, Refused

_FILTERS = ("run_id", "dataset", "backbone", "loss", "protocol", "threat", "mode")
_CONFIG_PARTS = ("backbone", "loss", "protocol", "dataset")  # a failed stage's configuration key


def _rows(args: argparse.Namespace, store) -> tuple[list[dict], list[dict]]:
    """(the rows to show, the failed grid stages matching the configuration filters)."""
    from rft_fast.results.export import failure_rows, records, wide_rows

    filters = {k: getattr(args, k) for k in _FILTERS if getattr(args, k)}
    try:
        # Failed grid stages are per configuration ("backbone|loss|protocol|dataset"): filtered on those parts.
        failures = failure_rows(store.stages(status="failed"), **{k: getattr(args, k) for k in _CONFIG_PARTS})
        if args.failures:
            return failures, failures
        if args.wide:
            model_filters = {k: v for k, v in filters.items() if k not in ("threat", "mode")}
            return records(wide_rows(store, mode=args.mode, **model_filters), hparams=args.hparams), failures
        return records(store.query(**filters), hparams=args.hparams), failures
    except ValueError as error:  # a bad filter is the user's input (opening the store is not: main's --debug hint)
        raise Refused(str(error)) from None


def _results(args: argparse.Namespace) -> int:
    from rft_fast.results import Store, format_table, to_csv, to_json
    from rft_fast.results.export import FAILURE_FIELDS

    if not Path(args.store).is_file():
        raise Refused(f"no results store at {args.store} (run `rft-fast eval` first or pass --store)")
    with Store(args.store) as store:
        rows, failures = _rows(args, store)
    if args.format == "table":
        text = "(no failed stages)" if args.failures and not rows else format_table(rows)
        if args.output:
            Path(args.output).write_text(text + "\n")
            if failures and not args.failures:
                print(f"{len(failures)} failed stage(s): `rft-fast results --failures --store {args.store}` lists them")
        else:
            print(text)
            if failures and not args.failures:
                print(f"\nfailed stages ({len(failures)}):\n{format_table(failures)}")
        return 0
    if args.format == "csv":

        def writer(rows, f):
            to_csv(rows, f, fieldnames=FAILURE_FIELDS if args.failures else None)
    else:
        writer = to_json
    if args.output:
        with open(args.output, "w", newline="") as f:
            writer(rows, f)
        print(f"wrote {len(rows)} rows to {args.output}")
    else:
        writer(rows, sys.stdout)
    return 0


def _import(args: argparse.Namespace) -> int:
    from rft_fast.results import Store
    from rft_fast.results.importing import import_csv

    with Store(args.store) as store:
        count = import_csv(args.file, store, run_prefix=args.prefix, scale=args.scale)
    print(f"imported {count} measurements into {args.store}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    res = sub.add_parser(
        "results",
        help="list or export the results store (table, CSV, JSON)",
        description="Rows of the store, filtered; --wide gives one row per model with clean, Linf, "
        "L2, L1 and common accuracy, for the attack mode the store holds (both modes: one row per "
        "model and mode, labelled in the mode column; standard and fast never mixed in a row). The "
        "table ends with the grid's failed stages; --failures lists only those.",
    )
    res.add_argument("--store", default="results.sqlite")
    for name in _FILTERS[:-1]:
        res.add_argument("--" + name.replace("_", "-"))
    res.add_argument(
        "--mode",
        choices=["standard", "fast", "-"],
        help="only this mode's rows (--wide: default the mode(s) the matching models have attack rows in)",
    )
    shown = res.add_mutually_exclusive_group()
    shown.add_argument(
        "--wide", action="store_true", help="one row per model (and attack mode): clean, Linf, L2, L1, common"
    )
    shown.add_argument(
        "--failures",
        action="store_true",
        help="only the failed grid stages: configuration, stage, reason (filtered by --backbone, "
        "--loss, --protocol, --dataset)",
    )
    res.add_argument("--hparams", action="store_true", help="include the hparams column (JSON; hidden by default)")
    res.add_argument("--format", choices=["table", "csv", "json"], default="table")
    res.add_argument("--output", help="write here instead of stdout")
    res.set_defaults(func=_results)
    actions = res.add_subparsers(dest="action")
    imp = actions.add_parser(
        "import",
        help="load per-configuration accuracies from a CSV (our columns, or the paper's results_dataset.csv)",
        description="The layout is recognized from the header. Ours: backbone, dataset, loss, protocol, clean, "
        "Linf, L2, L1, common; optional run_id, Linf_eps, L2_eps, L1_eps, n, mode, source. The paper's "
        "published results_dataset.csv (arXiv 2508.14079) as it is: clean_acc ... common_acc, loss_function, "
        "ft_strategy, backbone, dataset, its backbone metadata (kept as provenance), its names mapped to ours. "
        "One accuracy scale per file (--scale). Run ids are kept under 'import:', so imported rows never pass "
        "for our own.",
    )
    imp.add_argument("file")
    imp.add_argument("--store", default="results.sqlite")
    imp.add_argument("--prefix", default="import", help="run id prefix of the imported rows (always under 'import:')")
    imp.add_argument(
        "--scale",
        choices=["auto", "fraction", "percent"],
        default="auto",
        help="accuracy scale of the whole file: fraction in [0, 1], percent in [0, 100], or auto (percent "
        "if some value > 1 and none in (0, 1]; fraction if all in [0, 1]; a mix is refused)",
    )
    imp.set_defaults(func=_import, refuses=REFUSED)
