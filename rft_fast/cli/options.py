"""What every command group shares: the argparse option types, the flag generator that turns a typed config's
fields into options (one per field, typed from its annotation, helped from its FIELD_HELP), the device
choice, and `Refused`, the error a command raises to stop with one `error:` line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The library errors a command that reads user input refuses with one plain `error:` line (SystemExit); a
# command declares the ones it refuses with set_defaults(refuses=...), and `main` is the one place they turn
# into that line (anything else is reported with the --debug hint).
REFUSED = (ValueError, FileNotFoundError)


class Refused(Exception):
    """A command's own refusal: `main` prints `error: <message>` and exits 1 (never a traceback)."""


# ----------------------------------------------------------------------------------------------- option types


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high] (the range is in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number in [{low}, {high}], got {text!r}")
        return value

    return parse


def float_above(low: float, *, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number > low (>= low when inclusive)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not (value >= low if inclusive else value > low):
            raise argparse.ArgumentTypeError(
                f"expected a finite number {'>=' if inclusive else '>'} {low:g}, got {text!r}"
            )
        return value

    return parse


positive_float = float_above(0.0)


def fraction(text: str) -> float:
    """A float, also written as a fraction such as 4/255."""
    try:
        num, _, den = text.partition("/")
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.01 or 4/255, got {text!r}") from None


def number_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (fractions such as 1/4 allowed), e.g. 0,0.25,0.5."""
    values = tuple(fraction(t.strip()) for t in text.split(",") if t.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.25,0.5, got {text!r}")
    return values


def shape(text: str) -> tuple[int, ...]:
    """An argparse type: a tensor shape written NxCxHxW."""
    try:
        dims = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 64x3x224x224, got {text!r}") from None
    if len(dims) < 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"shape needs >= 2 positive dims (N x ...), got {text!r}")
    return dims


def device_name(text: str) -> str:
    """An argparse type: cpu, cuda or cuda:N."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


# ----------------------------------------------------------------------------------------------- shared options


def device_args(
    p: argparse.ArgumentParser, device_help: str = "cpu or cuda (default: cuda if visible, else cpu)"
) -> None:
    p.add_argument("--device", type=device_name, default=None, help=device_help)
    p.add_argument("--threads", type=int_in(0, 4096), default=0, help="CPU threads (default: torch's default)")


def pick_device(args: argparse.Namespace) -> str:
    """The --device to run on (cuda when visible, else cpu), refused when it is not there; sets --threads."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise Refused("--device cuda requested but no GPU is visible")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise Refused(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def default_cache() -> str:
    """~/.cache/rft-fast/corruptions (under $XDG_CACHE_HOME when set)."""
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rft-fast" / "corruptions")


def emit(module: Any, result: dict, json_path: str | None) -> int:
    """Prints a bench module's table and, with --json, writes its result."""
    print(module.format_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0


# ----------------------------------------------------------------------------------------------- flag generator

_CONVERT: dict[str, Callable[[str], Any]] = {"int": int, "float": fraction, "str": str}


def field_help(text: str, default: Any) -> str:
    """A field's help text with its default appended (floats to 6 significant digits)."""
    if default is None:
        return text
    return text + (f" (default: {default:.6g})" if isinstance(default, float) else f" (default: {default})")


def config_flags(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    config: type,
    helps: Mapping[str, str],
    *,
    skip: tuple[str, ...] = (),
) -> list[str]:
    """One option --a-field per field of the dataclass `config` (but `skip`), typed from its annotation (bool:
    --x / --no-x; int, float (fractions such as 4/255 allowed), str), helped from `helps` with the default, no
    default of its own (argparse.SUPPRESS: an option not given leaves the field's default to the config, which
    checks every value) and required when the field has no default. Returns the field names."""
    names = []
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).replace(" | None", "")
        default = None if f.default is dataclasses.MISSING else f.default
        text = field_help(helps[f.name], default)
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            p.add_argument(
                flag,
                type=_CONVERT[kind],
                default=argparse.SUPPRESS,
                required=f.default is dataclasses.MISSING,
                help=text,
            )
        names.append(f.name)
    return names


def given(args: argparse.Namespace, names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The options among `names` given on the command line (generated flags have no default of their own)."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
