"""The CLI's surface as data: every (subcommand, flag, choices, default, nargs), for the snapshot that proves a
refactor kept every flag."""

from __future__ import annotations

import argparse
from typing import Any


def cli_surface(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += cli_surface(sub, path + (name,))
        elif not isinstance(action, argparse._HelpAction):
            out.append(
                {
                    "command": " ".join(path),
                    "flags": list(action.option_strings) or [action.dest],
                    "choices": None if action.choices is None else sorted(str(c) for c in action.choices),
                    "default": repr(action.default),
                    "nargs": repr(action.nargs),
                }
            )
    return out
