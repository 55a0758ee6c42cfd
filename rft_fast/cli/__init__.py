"""The `rft-fast` command line: the only place that parses arguments and prints.

One module per command group (bench, train, models, eval, results, grid, report, datasets), each adding its
subcommands with `add_commands(sub)`; options.py holds what they share (option types, the flag generator that
turns a typed config into options, the device choice). `main` is the one place a failure becomes an error line.
"""

from __future__ import annotations

import argparse
import sys

from rft_fast.cli import bench, datasets, evaluate, grid, models, report, results, train
from rft_fast.cli.options import Refused

__all__ = ["build_parser", "main", "Refused", "USER_ERRORS"]

GROUPS = (bench, train, models, evaluate, results, grid, report, datasets)  # the order `rft-fast --help` lists
USER_ERRORS = (ValueError, OSError, LookupError)  # bad input, missing or unreadable files, unknown names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rft-fast", description="Fast adversarially robust fine-tuning toolkit.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure (accepted anywhere)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. Every failure ends with one `error:` line on stderr and a non-zero exit; --debug
    (anywhere on the command line) shows the traceback instead.

    A command's refusal (`Refused`, or a library error of a type the command declares with
    set_defaults(refuses=...): its input was wrong) exits with `error: <message>`; any other failure prints
    `error: <message> (--debug shows the traceback)`, marked as an internal error unless it is a user error
    (bad value, file, name, store or YAML), and returns 1."""
    import sqlite3

    import yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Refused as error:
        raise SystemExit(f"error: {error}") from None
    except Exception as error:  # noqa: BLE001 - the one place a failure becomes an error line
        if debug:
            raise
        if isinstance(error, getattr(args, "refuses", ())):
            raise SystemExit(f"error: {error}") from None
        known = isinstance(error, (*USER_ERRORS, sqlite3.DatabaseError, yaml.YAMLError))
        text = " ".join(str(error).split()) or type(error).__name__
        kind = "" if known else f"internal error ({type(error).__name__}): "
        print(f"error: {kind}{text[:2000]} (--debug shows the traceback)", file=sys.stderr, flush=True)
        return 1
