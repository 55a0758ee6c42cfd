"""`rft-fast eval`: AutoAttack, common corruptions and (opt-in) randomized smoothing of one fine-tuned model,
each measurement stored when done."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rft_fast.cli.options import (
    REFUSED, Refused, default_cache, device_args, fraction, int_in, number_list, pick_device, positive_float,
)


def threat_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated threats of the evaluation."""
    from rft_fast.eval import ALL_THREATS

    threats = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in threats if t not in ALL_THREATS]
    if unknown or not threats:
        raise argparse.ArgumentTypeError(f"threats must be a comma-separated subset of {','.join(ALL_THREATS)}, got {text!r}")
    return threats


def _show_measurement(m) -> None:
    """One line per stored measurement while `rft-fast eval` runs."""
    if m.threat == "smoothing-L2":
        what = f"{m.mode} " + ("smoothed" if m.eps is None else f"r={m.eps:g}")
    else:
        what = m.corruption or m.eps or ""
    print(f"{m.threat:<12} {what:<18} {m.accuracy:.4f}", flush=True)


def _settings(args: argparse.Namespace):
    from rft_fast.eval import EvalSettings

    return EvalSettings(
        threats=args.threats, n=args.n, subset_seed=args.subset_seed, mode=args.mode,
        eps={"Linf": args.eps_linf, "L2": args.eps_l2, "L1": args.eps_l1}, corruption_setting=args.corruptions,
        severity=args.severity, cache_dir=None if args.no_cache else args.cache_dir, batch_size=args.batch_size,
        workers=args.workers, seed=args.seed, smoothing_sigmas=args.sigma, smoothing_radii=args.radii,
        smoothing_n0=args.smoothing_n0, smoothing_n=args.smoothing_n, smoothing_alpha=args.smoothing_alpha,
        smoothing_batch_size=args.smoothing_batch_size,
    )


def _model(args: argparse.Namespace, device: str):
    """(model, test split, RunInfo, source key) from a `rft-fast train` checkpoint or --backbone/--weights."""
    from rft_fast import data, models
    from rft_fast.eval import RunInfo
    from rft_fast.results.importing import NAMESPACE
    from rft_fast.train import load_trained

    if args.checkpoint is not None:
        if args.backbone or args.weights:
            raise Refused("give either a checkpoint or --backbone with --weights, not both")
        model, config = load_trained(args.checkpoint, device)
        dataset, root, size = config.dataset, args.data_root or config.data_root, config.image_size
        run = RunInfo(args.run_id or config.run_id(), dataset, config.backbone, config.loss, config.protocol, config.hparams())
    else:
        if not (args.backbone and args.weights and args.dataset):
            raise Refused("without a checkpoint, --backbone, --weights and --dataset are required")
        dataset, root, size = args.dataset, args.data_root, args.image_size
        splits = data.build(dataset, root, image_size=size)
        model = models.load_finetuned(args.backbone, splits.num_classes, args.weights, image_size=size).to(device).eval()
        run = RunInfo(args.run_id or Path(args.weights).stem, dataset, args.backbone, args.loss, args.protocol, {})
    if run.run_id.startswith(NAMESPACE + ":"):
        raise Refused(f"--run-id {run.run_id!r}: ids starting with '{NAMESPACE}:' are kept for imported rows")
    splits = data.build(dataset, root, image_size=size)
    return model, splits.test, run, {"dataset": dataset, "split": "test", "image_size": size}


def _eval(args: argparse.Namespace) -> int:
    from rft_fast.eval import evaluate
    from rft_fast.grid.runner import reason
    from rft_fast.results import Store, format_table

    device = pick_device(args)
    settings = _settings(args)
    model, test_set, run, key = _model(args, device)
    failed: dict[str, str] = {}

    def on_failure(threat: str, error: Exception) -> None:
        failed[threat] = reason(error)
        print(f"{threat}: failed: {failed[threat]}", file=sys.stderr, flush=True)

    with Store(args.store) as store:
        rows = evaluate(model, test_set, run, settings, store=store, source_key=key, progress=args.progress,
                        on_result=_show_measurement, on_failure=on_failure)
    if rows:
        print(format_table(rows))
    print(f"stored {len(rows)} measurements in {args.store} (run id {run.run_id})"
          + (f"; {len(failed)} threat(s) failed: " + "; ".join(f"{t}: {r}" for t, r in failed.items()) if failed else ""))
    return 1 if failed else 0


def _model_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("checkpoint", nargs="?", help="run folder or checkpoint.pt written by `rft-fast train`")
    ev.add_argument("--backbone", help="registry name (with --weights: a fine-tuned state dict, head included)")
    ev.add_argument("--weights", help="fine-tuned weights file (.safetensors / .pth)")
    ev.add_argument("--dataset", help="dataset name (with --backbone)")
    ev.add_argument("--data-root", help="dataset root (default: the checkpoint's)")
    ev.add_argument("--image-size", type=int_in(8, 2048), default=224, help="with --backbone (default 224)")
    ev.add_argument("--loss", default="unknown", help="label stored with --backbone runs")
    ev.add_argument("--protocol", default="unknown", help="label stored with --backbone runs")
    ev.add_argument("--run-id", help="store key of this model (default: the config's hash, or the weights file name)")


def _settings_options(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--threats", type=threat_list, default=("clean", "Linf", "L2", "L1", "corruptions"),
                    help="comma-separated subset of clean,Linf,L2,L1,corruptions,smoothing-L2 (default: all but "
                    "smoothing-L2, which runs only when named)")
    ev.add_argument("--n", type=int_in(1, 10**7), default=1000, help="stratified test subset size (default 1000, the study's)")
    ev.add_argument("--subset-seed", type=int_in(0, 2**32 - 1), default=0)
    ev.add_argument("--mode", choices=["standard", "fast"], default="standard",
                    help="AutoAttack standard, or fast = APGD-CE + APGD-T (labelled 'fast' in the store)")
    ev.add_argument("--eps-linf", type=fraction, default=4 / 255, help="default 4/255")
    ev.add_argument("--eps-l2", type=fraction, default=2.0, help="default 2.0")
    ev.add_argument("--eps-l1", type=fraction, default=75.0, help="default 75")
    ev.add_argument("--corruptions", choices=["study", "full"], default="study",
                    help="study: 11 types at severity 3, one per image; full: 15 types x 5 severities")
    ev.add_argument("--severity", type=int_in(1, 5), default=3)
    ev.add_argument("--cache-dir", default=default_cache(), help="corrupted test sets (default: ~/.cache/rft-fast/corruptions)")
    ev.add_argument("--no-cache", action="store_true", help="do not read or write the corruption cache")
    ev.add_argument("--store", default="results.sqlite", help="SQLite results store (default: ./results.sqlite)")
    device_args(ev, "cpu or cuda (default: cuda if visible)")
    ev.add_argument("--batch-size", type=int_in(1, 65536), default=None, help="attack batch (default: the largest that fits)")
    ev.add_argument("--workers", type=int_in(0, 256), default=None, help="corruption worker processes (default: all cores)")
    ev.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="AutoAttack, corruption and smoothing-noise seed")
    sm = ev.add_argument_group("randomized smoothing (threat smoothing-L2)")
    sm.add_argument("--sigma", type=number_list, default=(0.25,),
                    help="comma-separated noise levels sigma > 0 in pixel units, each certified separately (default 0.25)")
    sm.add_argument("--radii", type=number_list, default=(0.0, 0.25, 0.5, 0.75, 1.0),
                    help="comma-separated L2 radii >= 0 of the stored certified accuracies (default 0,0.25,0.5,0.75,1)")
    sm.add_argument("--smoothing-n0", type=int_in(1, 10**8), default=100, help="selection draws per image (default 100)")
    sm.add_argument("--smoothing-n", type=int_in(1, 10**9), default=100_000, help="estimation draws per image (default 100000)")
    sm.add_argument("--smoothing-alpha", type=positive_float, default=0.001,
                    help="failure probability of the certificate (default 0.001)")
    sm.add_argument("--smoothing-batch-size", type=int_in(1, 10**6), default=1000, help="noisy images per forward pass (default 1000)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="AutoAttack (Linf/L2/L1), common corruptions and (opt-in) randomized smoothing of a fine-tuned model, "
        "into the results store",
        description="Evaluates a `rft-fast train` checkpoint (run folder or checkpoint.pt), or any fine-tuned "
        "timm checkpoint with --backbone/--weights/--dataset, on a stratified seeded test subset: clean accuracy, "
        "AutoAttack (pyautoattack) robust accuracy per norm at the study's eps, and corruption accuracy "
        "(imagecorruptions; corrupted sets cached on disk). Opt-in threat smoothing-L2: randomized-smoothing "
        "certification (Cohen et al. 2019 CERTIFY) per --sigma, stored as the smoothed accuracy and the certified "
        "accuracy at each of --radii. Each measurement is stored when done.",
    )
    _model_options(ev)
    _settings_options(ev)
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    ev.set_defaults(func=_eval, refuses=REFUSED)
