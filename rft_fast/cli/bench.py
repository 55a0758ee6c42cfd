"""`rft-fast bench SUITE`: the throughput and memory suites of rft_fast.bench, one subcommand each."""

from __future__ import annotations

import argparse

import torch

from rft_fast import ops
from rft_fast.cli.options import (
    DTYPES,
    REFUSED,
    Refused,
    device_args,
    emit,
    float_above,
    int_in,
    pick_device,
    positive_float,
    shape,
)


def attack_losses() -> list[str]:
    """The registered losses trained on attack examples without a regularizer of their own (the suites time
    these): classic_at, trades (rft_fast.train.loss_registry)."""
    from rft_fast.train.loss_registry import LOSS_REGISTRY

    return [
        name
        for name, spec in LOSS_REGISTRY.items()
        if spec.uses_attack and not spec.sharpness_aware and not spec.fields
    ]


def _check_backends(requested: list[str] | None, available: list[str], device: str) -> None:
    unknown = [b for b in requested or [] if b not in available]
    if unknown:
        raise Refused(f"--backends {unknown} not available on {device}; available: {available}")


def _ops(args: argparse.Namespace) -> int:
    from rft_fast.bench import ops_bench

    if args.dry:
        return _ops_dry(args)
    device = pick_device(args)
    _check_backends(args.backends, ops_bench.bench_backends(torch.device(device)), device)
    result = ops_bench.run(
        device=device,
        shapes=tuple(args.shapes) if args.shapes else ops_bench.DEFAULT_SHAPES,
        dtype=DTYPES[args.dtype],
        norms=tuple(args.norms),
        op_names=tuple(args.ops),
        backends=args.backends,
        min_seconds=args.min_seconds,
    )
    return emit(ops_bench, result, args.json)


def _ops_dry(args: argparse.Namespace) -> int:
    """--dry: compile what the suite would launch for CUDA and report the binaries; nothing runs on a device."""
    from rft_fast.bench import ops_bench, ptx_report

    if args.device is not None and torch.device(args.device).type != "cuda":
        raise Refused(f"--dry reports the CUDA kernels: use --device cuda (or none), got --device {args.device}")
    result = ptx_report.run(
        shapes=tuple(args.shapes) if args.shapes else ops_bench.DEFAULT_SHAPES,
        dtype=DTYPES[args.dtype],
        norms=tuple(args.norms),
        op_names=tuple(args.ops),
    )
    return emit(ptx_report, result, args.json)


def _kl(args: argparse.Namespace) -> int:
    from rft_fast.bench import kl_bench

    device = pick_device(args)
    _check_backends(args.backends, kl_bench.bench_backends(torch.device(device)), device)
    result = kl_bench.run(
        device=device,
        classes=tuple(args.classes),
        batches=tuple(args.batches),
        dtype=DTYPES[args.dtype],
        backends=args.backends,
        min_seconds=args.min_seconds,
    )
    return emit(kl_bench, result, args.json)


def _trades(args: argparse.Namespace) -> int:
    from rft_fast.bench import trades_bench

    result = trades_bench.run(
        device=pick_device(args),
        models=tuple(args.models),
        batch=args.batch,
        image_size=args.image_size,
        attack_steps=args.attack_steps,
        max_memory_gb=args.max_memory_gb,
        min_seconds=args.min_seconds,
        amp=args.amp,
    )
    return emit(trades_bench, result, args.json)


def _attack(args: argparse.Namespace) -> int:
    from rft_fast.bench import attack_bench

    impls = args.impls or attack_bench.available_impls()
    missing = [i for i in impls if i not in attack_bench.available_impls()]
    if missing:
        raise Refused(f"--impls {missing} not available here (pip install pyautoattack)")
    result = attack_bench.run(
        device=pick_device(args),
        models=tuple(args.models),
        batch=args.batch,
        image_size=args.image_size,
        dtypes=tuple(args.dtypes),
        impls=tuple(impls),
        norm=args.norm,
        eps=args.eps,
        steps=args.steps,
        restarts=args.restarts,
        num_classes=args.num_classes,
        channels_last=args.channels_last,
        min_seconds=args.min_seconds,
        min_reps=args.min_reps,
    )
    return emit(attack_bench, result, args.json)


def _train(args: argparse.Namespace) -> int:
    from rft_fast.bench import train_bench

    result = train_bench.run(
        device=pick_device(args),
        models=tuple(args.models),
        batch=args.batch,
        image_size=args.image_size,
        attack_steps=args.attack_steps,
        dtypes=tuple(args.dtypes),
        losses=tuple(args.losses),
        min_seconds=args.min_seconds,
        min_reps=args.min_reps,
    )
    return emit(train_bench, result, args.json)


def _eval(args: argparse.Namespace) -> int:
    from rft_fast.bench import eval_bench

    datasets = None
    if args.datasets:
        datasets = {}
        for item in args.datasets:
            name, _, root = item.partition("=")
            datasets[name] = root or None
    result = eval_bench.run(
        device=pick_device(args),
        model=args.model,
        n=args.n,
        image_size=args.image_size,
        mode=args.mode,
        norms=tuple(args.norms),
        datasets=datasets,
        cache_size=args.cache_size,
        worker_counts=tuple(args.workers) if args.workers else None,
    )
    return emit(eval_bench, result, args.json)


def _regularizers(args: argparse.Namespace) -> int:
    from rft_fast.bench import regularizer_bench

    result = regularizer_bench.run(
        device=pick_device(args),
        model=args.model,
        batch=args.batch,
        image_size=args.image_size,
        attack_steps=args.attack_steps,
        losses=tuple(args.losses),
        variants=tuple(args.variants),
        min_reps=args.min_reps,
        min_seconds=args.min_seconds,
    )
    return emit(regularizer_bench, result, args.json)


def _tora(args: argparse.Namespace) -> int:
    from rft_fast.bench import tora_bench

    result = tora_bench.run(
        device=pick_device(args),
        backbones=tuple(args.models) if args.models else None,
        batch=args.batch,
        image_size=args.image_size,
        loss=args.loss,
        attack_steps=args.attack_steps,
    )
    return emit(tora_bench, result, args.json)


def _data(args: argparse.Namespace) -> int:
    from rft_fast.bench import data_bench

    result = data_bench.run(
        device=pick_device(args),
        n=args.n,
        image_size=args.image_size,
        source_size=args.source_size,
        batch=args.batch,
        workers=args.workers,
        epochs=args.epochs,
    )
    return emit(data_bench, result, args.json)


def _common(p: argparse.ArgumentParser) -> None:
    device_args(p)
    p.add_argument(
        "--min-seconds", type=float_above(0.0, inclusive=True), default=0.3, help="minimum timed seconds per case"
    )
    p.add_argument("--json", help="also write the results (with device, versions, date, command) here")


def _model_suite(p: argparse.ArgumentParser, batch: int | None, image_size: int | None) -> None:
    """What the model-level suites (trades, attack, train) share: timm models, batch, resolution."""
    _common(p)
    p.set_defaults(min_seconds=0.0)
    p.add_argument(
        "--models", nargs="+", default=["resnet50", "convnext_tiny", "vit_small_patch16_224"], help="timm names"
    )
    p.add_argument("--batch", type=int_in(1, 65536), default=batch)
    p.add_argument("--image-size", type=int_in(8, 2048), default=image_size)


def _kernel_suites(suites: argparse._SubParsersAction) -> None:
    b_ops = suites.add_parser(
        "ops",
        help="project / pgd_step / apgd_step per norm and backend vs torch eager",
        description="Median time, effective GB/s (ideal bytes read + written / time), speed-up over the "
        "torch eager reference and the measured copy bandwidth, all in one run.",
    )
    _common(b_ops)
    b_ops.add_argument("--shapes", type=shape, nargs="+", help="e.g. 64x3x224x224 256x3x32x32 (the default)")
    b_ops.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    b_ops.add_argument("--norms", nargs="+", choices=ops.NORMS, default=list(ops.NORMS))
    b_ops.add_argument(
        "--ops", nargs="+", choices=["project", "pgd_step", "apgd_step"], default=["project", "pgd_step", "apgd_step"]
    )
    b_ops.add_argument(
        "--backends", nargs="+", choices=list(ops.BACKENDS), help="default: all available (torch always)"
    )
    b_ops.add_argument(
        "--dry",
        action="store_true",
        help="compile the Triton kernels for sm_80 / sm_90 instead of timing: registers, shared memory, spills, "
        "128-bit accesses, per-element gathers, and the CUDA extension's resource usage; needs no GPU",
    )
    b_ops.set_defaults(func=_ops)

    b_kl = suites.add_parser(
        "kl",
        help="TRADES objective (CE + beta KL) forward+backward per backend vs torch eager",
        description="Time, GB/s (6 N C elements moved), speed-up over eager and copy bandwidth per (N, C).",
    )
    _common(b_kl)
    b_kl.add_argument("--classes", type=int_in(2, 10**6), nargs="+", default=[10, 102, 1000, 21843])
    b_kl.add_argument("--batches", type=int_in(1, 65536), nargs="+", default=[64, 256])
    b_kl.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    b_kl.add_argument("--backends", nargs="+", choices=list(ops.BACKENDS), help="default: all available (torch always)")
    b_kl.set_defaults(func=_kl)


def _model_suites(suites: argparse._SubParsersAction) -> None:
    from rft_fast.bench import trades_bench

    losses = attack_losses()
    b_tr = suites.add_parser(
        "trades",
        help="a TRADES step (attack + loss + backward), standard vs memory-saving: time, peak memory, max batch",
        description="Peak memory: CUDA allocator peak on GPU; saved-activation peak (autograd hooks) everywhere.",
    )
    _model_suite(b_tr, batch=64, image_size=224)
    b_tr.add_argument("--attack-steps", type=int_in(1, 10_000), default=10)
    b_tr.add_argument(
        "--max-memory-gb", type=positive_float, default=None, help="also find the largest batch under this cap"
    )
    b_tr.add_argument(
        "--amp", choices=list(trades_bench.AMP_DTYPES), default="none", help="autocast dtype of the step (none: fp32)"
    )
    b_tr.set_defaults(func=_trades)

    b_at = suites.add_parser(
        "attack",
        help="APGD-CE images/s: rft-fast vs pyautoattack's APGD vs the plain reference, with robust accuracy",
        description="Median seconds per batch and images/s of APGD (default: CE, Linf 4/255, 10 steps) for each "
        "model x dtype x implementation, the robust accuracy each reaches on the same points, and the speed-up "
        "over pyautoattack (same dtype, and its float32). Random-init timm models; labels = clean predictions. "
        "rft-fast = select='loss' (training attack), rft-fast-aa = select='misclassified' (AutoAttack semantics).",
    )
    _model_suite(b_at, batch=128, image_size=224)
    b_at.add_argument(
        "--dtypes",
        nargs="+",
        choices=["float32", "bfloat16"],
        default=["float32", "bfloat16"],
        help="bfloat16: the model's forward/backward under autocast, attack arithmetic float32",
    )
    b_at.add_argument(
        "--impls",
        nargs="+",
        choices=["rft-fast", "rft-fast-aa", "pyautoattack", "reference"],
        help="default: all available",
    )
    b_at.add_argument("--norm", choices=ops.NORMS, default="Linf")
    b_at.add_argument("--eps", type=positive_float, default=4 / 255, help="default 4/255 (the study's training eps)")
    b_at.add_argument("--steps", type=int_in(1, 10_000), default=10)
    b_at.add_argument("--restarts", type=int_in(1, 1000), default=1)
    b_at.add_argument("--num-classes", type=int_in(2, 10**6), default=10)
    b_at.add_argument("--channels-last", action="store_true", help="model and images in channels_last (all impls)")
    b_at.add_argument(
        "--min-reps", type=int_in(1, 10**6), default=3, help="timed repetitions per case (after one warm-up)"
    )
    b_at.set_defaults(func=_attack)

    b_train = suites.add_parser(
        "train",
        help="one training step (APGD-CE K steps + Classic AT or TRADES + AdamW): rft-fast vs the reference loop",
        description="Images/s and peak memory of rft-fast's training step (fused attack ops, memory-saving TRADES) "
        "and of the plain reference loop (eager APGD, two-graph TRADES), per model x loss x dtype in one run. "
        "Default batch x size: 64 x 224 on GPU, 8 x 64 on CPU.",
    )
    _model_suite(b_train, batch=None, image_size=None)
    b_train.add_argument("--attack-steps", type=int_in(1, 10_000), default=10)
    b_train.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    b_train.add_argument("--losses", nargs="+", choices=losses, default=list(losses))
    b_train.add_argument(
        "--min-reps", type=int_in(1, 10**6), default=2, help="timed repetitions per case (after one warm-up)"
    )
    b_train.set_defaults(func=_train)


def _study_suites(suites: argparse._SubParsersAction) -> None:
    losses = attack_losses()
    b_eval = suites.add_parser(
        "eval",
        help="seconds of one model's full evaluation (clean, AutoAttack per norm, corruptions) and of corrupted-set builds",
        description="Model part: a random-init timm model on n images (labels = its clean predictions), seconds per "
        "threat. Cache part: seconds to corrupt each dataset's 1,000-image test subset (study setting) with 2 and "
        "with all cores. Default n x size: 1000 x 224 on GPU, 16 x 64 on CPU.",
    )
    _common(b_eval)
    b_eval.add_argument("--model", default="resnet50", help="timm name (default resnet50)")
    b_eval.add_argument("--n", type=int_in(1, 10**7), default=None)
    b_eval.add_argument("--image-size", type=int_in(8, 2048), default=None)
    b_eval.add_argument("--mode", choices=["standard", "fast"], default="standard")
    b_eval.add_argument("--norms", nargs="+", choices=ops.NORMS, default=list(ops.NORMS))
    b_eval.add_argument("--datasets", nargs="+", help="NAME[=ROOT] whose test split to corrupt (default: digits)")
    b_eval.add_argument(
        "--cache-size", type=int_in(8, 2048), default=224, help="resolution of the corrupted sets (default 224)"
    )
    b_eval.add_argument(
        "--workers", type=int_in(0, 256), nargs="+", help="worker counts to time (default: 2 and all cores)"
    )
    b_eval.set_defaults(func=_eval, refuses=REFUSED)

    b_reg = suites.add_parser(
        "regularizers",
        help="training-step overhead of GRACE (Gram term, CurvatureSAM) and the consistency loss over plain Classic AT / TRADES",
        description="Median seconds and images/s of one training step (APGD-CE Linf 4/255 + loss + backward + AdamW) "
        "per loss x variant: plain, gram (GraceLoss), grace (GraceLoss + CurvatureSAM), consistency "
        "(ConsistencyLoss), and each variant's step time over the plain one. Random-init timm model.",
    )
    _common(b_reg)
    b_reg.set_defaults(min_seconds=1.0)
    b_reg.add_argument("--model", default="test_resnet", help="timm name (default test_resnet)")
    b_reg.add_argument("--batch", type=int_in(1, 65536), default=16)
    b_reg.add_argument("--image-size", type=int_in(8, 2048), default=32)
    b_reg.add_argument("--attack-steps", type=int_in(1, 10_000), default=5)
    b_reg.add_argument("--losses", nargs="+", choices=losses, default=list(losses))
    b_reg.add_argument(
        "--variants",
        nargs="+",
        choices=["plain", "gram", "grace", "consistency"],
        default=["plain", "gram", "grace", "consistency"],
    )
    b_reg.add_argument(
        "--min-reps", type=int_in(1, 10**6), default=5, help="timed repetitions per case (after one warm-up)"
    )
    b_reg.set_defaults(func=_regularizers, refuses=(ValueError,))

    b_tora = suites.add_parser(
        "tora",
        help="TORA adapters vs full fine-tuning vs linear probing: trainable parameters, step time, peak memory",
        description="One training step per method (FFT, LP, TORA phase 1, TORA phase 2) on a random-init ViT. "
        "Defaults: vit_small and vit_base at 224, batch 64, APGD-10 on GPU; vit_small at 64 px, batch 8, APGD-2 on CPU.",
    )
    _common(b_tora)
    b_tora.add_argument("--models", nargs="+", help="registry ViT backbones (default: see above)")
    b_tora.add_argument("--batch", type=int_in(1, 65536), default=None)
    b_tora.add_argument("--image-size", type=int_in(8, 2048), default=None)
    b_tora.add_argument("--loss", choices=losses, default="trades")
    b_tora.add_argument("--attack-steps", type=int_in(1, 10_000), default=None)
    b_tora.set_defaults(func=_tora, refuses=(ValueError,))


def _data_suite(suites: argparse._SubParsersAction) -> None:
    b_data = suites.add_parser(
        "data",
        help="training images/s: decoded cache + device augmentation vs torchvision ImageFolder + transforms",
        description="Writes N synthetic JPEGs, then times one augmented training epoch delivered to the device: "
        "torchvision's ImageFolder + v2 transforms (decode, resize, the study's augmentation per item) with "
        "--workers processes vs rft-fast's decoded cache (built once, timed apart) + batched augmentation on the "
        "device; same pixels for the same seed.",
    )
    device_args(b_data)
    b_data.add_argument("--json", help="also write the results (with device, versions, date, command) here")
    b_data.add_argument("--n", type=int_in(4, 10**7), default=512, help="JPEGs written (default 512)")
    b_data.add_argument("--image-size", type=int_in(8, 2048), default=224)
    b_data.add_argument("--source-size", type=int_in(8, 4096), default=256, help="JPEG side (default 256)")
    b_data.add_argument("--batch", type=int_in(1, 65536), default=128)
    b_data.add_argument("--workers", type=int_in(0, 256), default=2, help="loader / decode processes (default 2)")
    b_data.add_argument("--epochs", type=int_in(1, 1000), default=2, help="timed cached epochs (median)")
    b_data.set_defaults(func=_data)


def add_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="throughput and memory benchmarks against plain PyTorch references")
    suites = bench.add_subparsers(dest="suite", required=True)
    _kernel_suites(suites)
    _model_suites(suites)
    _study_suites(suites)
    _data_suite(suites)
