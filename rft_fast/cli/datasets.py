"""`rft-fast datasets`: the dataset registry (names, classes, the layout expected under --data-root)."""

from __future__ import annotations

import argparse


def _datasets(args: argparse.Namespace) -> int:
    from rft_fast import data

    print(data.format_table())
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser("datasets", help="the dataset registry: names, classes, expected layout under --data-root")
    ds.set_defaults(func=_datasets)
