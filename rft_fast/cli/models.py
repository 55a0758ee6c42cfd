"""`rft-fast models`: the backbone registry (list with filters, timm's names), hub weights (fetch into the cache
for offline runs), convert downloaded robust checkpoints."""

from __future__ import annotations

import argparse

from rft_fast.cli.options import REFUSED


def _list(args: argparse.Namespace) -> int:
    from rft_fast import models

    if args.timm is not None:
        names = models.list_timm(args.timm)
        study = {s.timm_id: s.name for s in models.REGISTRY.values() if s.study and s.pretrained_tag}
        for name in names:
            mark = "" if name not in study else "  (study)" if study[name] == name else f"  (study: {study[name]})"
            print(name + mark)
        print(f"{len(names)} timm pretrained name(s) match {args.timm!r}; each is a backbone name")
        return 0
    specs = models.list_backbones(args.pattern, arch=args.arch, size=args.size, pretraining=args.pretraining)
    print(models.format_table(specs))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from rft_fast import models

    if bool(args.names) == bool(args.spec):
        raise ValueError("models fetch: give backbone NAMES or --spec SPEC.yaml (one of the two)")
    results = [models.fetch(name) for name in args.names] if args.names else _fetch_spec(args.spec)
    for r in results:
        print(f"{r.status:<8} {r.name}  {r.detail}")
    counts = {s: sum(r.status == s for r in results) for s in models.hub.FETCH_STATUSES}
    print(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; hub cache: {models.hub_cache_dir()}")
    return 0


def _fetch_spec(path: str) -> list:
    """`fetch` for each backbone of the grid spec at `path` that takes hub weights; the others skipped."""
    from rft_fast import models
    from rft_fast.grid.configs import hub_backbones, weights_path
    from rft_fast.grid.spec import load_spec

    spec = load_spec(path)
    hub = set(hub_backbones(spec))
    out = []
    for backbone in spec.backbones:
        if backbone in hub:
            out.append(models.fetch(backbone))
        else:
            reason = "random_init: no weights" if spec.random_init else f"local file {weights_path(spec, backbone)}"
            out.append(models.Fetched(backbone, "skipped", reason))
    return out


def _convert(args: argparse.Namespace) -> int:
    from rft_fast import models

    out = models.convert_checkpoint(args.name, args.src, args.dst)
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    mod = sub.add_parser(
        "models",
        help="the backbone registry: list (with filters, or timm's names), fetch hub weights, convert weights",
        description="`rft-fast models` lists the registered backbones (the study's 40 marked) with their metadata; "
        "`models list` filters them, `models list --timm PATTERN` lists timm's pretrained names (any of them is a "
        "backbone); `models fetch` caches hub weights for offline runs (HF_HUB_OFFLINE=1); `models convert` "
        "turns a downloaded checkpoint (timm, Madry lab, Singh et al.) into the registry's state dict.",
    )
    mod.set_defaults(func=_list, refuses=(ValueError,), pattern="*", arch=None, size=None, pretraining=None, timm=None)
    actions = mod.add_subparsers(dest="action")
    lst = actions.add_parser("list", help="list backbones, filtered")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on the name (default: all)")
    lst.add_argument("--arch", help="convolutional | attention | hybrid")
    lst.add_argument("--size", help="small | medium | large")
    lst.add_argument("--pretraining", help="pretraining label, e.g. 'supervised'")
    lst.add_argument(
        "--timm", metavar="PATTERN", help="list timm's pretrained names matching PATTERN (fnmatch, e.g. 'resnet*')"
    )
    lst.set_defaults(func=_list)
    fetch = actions.add_parser(
        "fetch",
        help="download hub weights into the Hugging Face cache (HF_HOME) for offline runs",
        description="Downloads each backbone's hub weights into the Hugging Face cache ($HF_HOME/hub), so that "
        "machines without internet then run with HF_HUB_OFFLINE=1 and the same HF_HOME. Backbones with a local "
        "file (a grid spec's pretrained / weights_dir) or without hub weights (robust checkpoints) are skipped.",
    )
    fetch.add_argument("names", nargs="*", help="backbone names (registered, aliases or any timm name)")
    fetch.add_argument("--spec", help="a grid spec YAML: every backbone of it that takes hub weights")
    fetch.set_defaults(func=_fetch, refuses=REFUSED)
    conv = actions.add_parser("convert", help="convert a checkpoint into the registry's expected .safetensors")
    conv.add_argument("name", help="registry name, e.g. robust_resnet50")
    conv.add_argument("src", help="the downloaded checkpoint file")
    conv.add_argument("dst", help="output .safetensors path")
    conv.set_defaults(func=_convert, refuses=REFUSED)
