"""`rft-fast datasets`: the dataset registry (names, classes, the layout expected under --data-root), and
`rft-fast datasets fetch NAME... --root DIR`, which downloads registered datasets into that layout."""

from __future__ import annotations

import argparse

from rft_fast.cli.options import Refused


def _datasets(args: argparse.Namespace) -> int:
    from rft_fast import data

    print(data.format_table())
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from rft_fast import data
    from rft_fast.data.fetch import FetchError

    for name in args.names:
        try:
            downloaded = data.download(name, args.root)
        except (ValueError, FetchError) as err:
            raise Refused(f"{name}: {err}") from None
        print(f"{name}: {'downloaded into' if downloaded else 'already present under'} {args.root}", flush=True)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser(
        "datasets",
        help="the dataset registry: names, classes, expected layout under --data-root; `fetch` downloads",
        description="Lists the registered datasets. Your own data needs no entry: name it folder:<dir> or "
        "csv:<file> wherever a dataset name goes (docs/data.md).",
    )
    ds.set_defaults(func=_datasets)
    actions = ds.add_subparsers(dest="action", metavar="{fetch}")
    fetch = actions.add_parser(
        "fetch",
        help="download registered datasets into --root, in the layout the loader expects",
        description="Downloads with torchvision's own download where it has one (caltech101, fgvc_aircraft, "
        "flowers102, oxford_pets), UC Merced from its official archive (MD5-checked); stanford_cars has no "
        "download left and says where its mirrors are. A dataset already under --root is left as it is. "
        "Loading (train, eval, grid) never downloads.",
    )
    fetch.add_argument("names", nargs="+", metavar="NAME", help="registered dataset names (`rft-fast datasets`)")
    fetch.add_argument("--root", required=True, help="the data root (what --data-root / data_roots then name)")
    fetch.set_defaults(func=_fetch)
