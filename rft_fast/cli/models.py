"""`rft-fast models`: the backbone registry (list with filters, convert downloaded weights)."""

from __future__ import annotations

import argparse

from rft_fast.cli.options import REFUSED


def _list(args: argparse.Namespace) -> int:
    from rft_fast import models

    specs = models.list_backbones(args.pattern, arch=args.arch, size=args.size, pretraining=args.pretraining)
    print(models.format_table(specs))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from rft_fast import models

    out = models.convert_checkpoint(args.name, args.src, args.dst)
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    mod = sub.add_parser(
        "models",
        help="the backbone registry: list (with filters) or convert weights",
        description="`rft-fast models` lists the study's backbones with their metadata; `models "
        "list` filters them; `models convert` turns a downloaded checkpoint (timm, Madry lab, Singh "
        "et al.) into the registry's state dict.",
    )
    mod.set_defaults(func=_list, refuses=(ValueError,), pattern="*", arch=None, size=None, pretraining=None)
    actions = mod.add_subparsers(dest="action")
    lst = actions.add_parser("list", help="list backbones, filtered")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on the name (default: all)")
    lst.add_argument("--arch", help="convolutional | attention | hybrid")
    lst.add_argument("--size", help="small | medium | large")
    lst.add_argument("--pretraining", help="pretraining label, e.g. 'supervised'")
    lst.set_defaults(func=_list)
    conv = actions.add_parser("convert", help="convert a checkpoint into the registry's expected .safetensors")
    conv.add_argument("name", help="registry name, e.g. robust_resnet50")
    conv.add_argument("src", help="the downloaded checkpoint file")
    conv.add_argument("dst", help="output .safetensors path")
    conv.set_defaults(func=_convert, refuses=REFUSED)
