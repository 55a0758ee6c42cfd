"""The `rft-fast` command line: the only place that parses arguments and prints."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rft_fast import ops

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 64x3x224x224, got {text!r}") from None
    if len(dims) < 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"shape needs >= 2 positive dims (N x ...), got {text!r}")
    return dims


def _bench_ops(args: argparse.Namespace) -> int:
    from rft_fast.bench import ops_bench

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda requested but no GPU is visible", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    available = ops_bench.bench_backends(torch.device(device))
    unknown = [b for b in args.backends or [] if b not in available]
    if unknown:
        print(f"error: --backends {unknown} not available on {device}; available: {available}", file=sys.stderr)
        return 2
    result = ops_bench.run(
        device=device,
        shapes=tuple(args.shapes) if args.shapes else ops_bench.DEFAULT_SHAPES,
        dtype=DTYPES[args.dtype],
        norms=tuple(args.norms),
        op_names=tuple(args.ops),
        backends=args.backends,
        min_seconds=args.min_seconds,
    )
    print(ops_bench.format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rft-fast", description="Fast adversarially robust fine-tuning toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="throughput and memory benchmarks against plain PyTorch references")
    bench_sub = bench.add_subparsers(dest="suite", required=True)
    b_ops = bench_sub.add_parser(
        "ops",
        help="project / pgd_step / apgd_step per norm and backend vs torch eager",
        description="Median time, effective GB/s (ideal bytes read + written / time), speed-up over the "
        "torch eager reference and the measured copy bandwidth, all in one run.",
    )
    b_ops.add_argument("--device", default=None, help="cpu or cuda (default: cuda if visible, else cpu)")
    b_ops.add_argument("--shapes", type=_shape, nargs="+", help="e.g. 64x3x224x224 256x3x32x32 (the default)")
    b_ops.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    b_ops.add_argument("--norms", nargs="+", choices=ops.NORMS, default=list(ops.NORMS))
    b_ops.add_argument("--ops", nargs="+", choices=["project", "pgd_step", "apgd_step"], default=["project", "pgd_step", "apgd_step"])
    b_ops.add_argument("--backends", nargs="+", choices=list(ops.BACKENDS), help="default: all available (torch always)")
    b_ops.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    b_ops.add_argument("--min-seconds", type=float, default=0.3, help="minimum timed seconds per case")
    b_ops.add_argument("--json", help="also write the results (with device, versions, date, command) here")
    b_ops.set_defaults(func=_bench_ops)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
