"""`rft-fast train`: one fine-tuning run, its options generated from TrainConfig (rft_fast.train.config)."""

from __future__ import annotations

import argparse
import json

from rft_fast.cli.options import REFUSED, config_flags, given


def _train(args: argparse.Namespace) -> int:
    from rft_fast.train import TrainConfig, fit

    config = TrainConfig(**given(args, args.fields))

    def show(row: dict) -> None:
        print(json.dumps(row), flush=True)

    result = fit(config, callback=show, resume=args.resume, progress=args.progress)
    print(f"status: {result.status}" + (f" ({result.message})" if result.message else ""))
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint} ({result.checkpoint.stat().st_size / 2**20:.1f} MiB)")
    return 0 if result.status != "diverged" else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    from rft_fast.train.config import FIELD_HELP, TrainConfig

    train = sub.add_parser(
        "train",
        help="robustly fine-tune one (backbone, dataset, protocol, loss) configuration",
        description="Fine-tunes a registry backbone on a dataset with the study's protocols and losses (defaults: "
        "the study's setting). Writes config.json, metrics.jsonl (one line per epoch) and an atomic "
        "checkpoint.pt to --out-dir and resumes from it. Example: rft-fast train --backbone deit_tiny_patch16_224"
        ".fb_in1k --dataset digits --random-init --protocol FFT-5 --loss trades --out-dir runs/x",
    )
    fields = config_flags(train, TrainConfig, FIELD_HELP)
    train.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from --out-dir/checkpoint.pt when it exists (default: yes)",
    )
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    train.set_defaults(func=_train, refuses=REFUSED, fields=fields)
