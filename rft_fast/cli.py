"""The `rft-fast` command line: the only place that parses arguments and prints."""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Callable

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


def _device(args: argparse.Namespace) -> str:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but no GPU is visible")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise SystemExit(f"error: --device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def _check_backends(requested: list[str] | None, available: list[str], device: str) -> None:
    unknown = [b for b in requested or [] if b not in available]
    if unknown:
        raise SystemExit(f"error: --backends {unknown} not available on {device}; available: {available}")


def _emit(module, result: dict, json_path: str | None) -> int:
    print(module.format_table(result))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0


def _bench_ops(args: argparse.Namespace) -> int:
    from rft_fast.bench import ops_bench

    device = _device(args)
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
    return _emit(ops_bench, result, args.json)


def _bench_kl(args: argparse.Namespace) -> int:
    from rft_fast.bench import kl_bench

    device = _device(args)
    _check_backends(args.backends, kl_bench.bench_backends(torch.device(device)), device)
    result = kl_bench.run(
        device=device, classes=tuple(args.classes), batches=tuple(args.batches), dtype=DTYPES[args.dtype],
        backends=args.backends, min_seconds=args.min_seconds,
    )
    return _emit(kl_bench, result, args.json)


def _bench_trades(args: argparse.Namespace) -> int:
    from rft_fast.bench import trades_bench

    result = trades_bench.run(
        device=_device(args), models=tuple(args.models), batch=args.batch, image_size=args.image_size,
        attack_steps=args.attack_steps, max_memory_gb=args.max_memory_gb, min_seconds=args.min_seconds,
    )
    return _emit(trades_bench, result, args.json)


def _bench_attack(args: argparse.Namespace) -> int:
    from rft_fast.bench import attack_bench

    impls = args.impls or attack_bench.available_impls()
    missing = [i for i in impls if i not in attack_bench.available_impls()]
    if missing:
        raise SystemExit(f"error: --impls {missing} not available here (pip install pyautoattack)")
    result = attack_bench.run(
        device=_device(args), models=tuple(args.models), batch=args.batch, image_size=args.image_size,
        dtypes=tuple(args.dtypes), impls=tuple(impls), norm=args.norm, eps=args.eps, steps=args.steps,
        restarts=args.restarts, num_classes=args.num_classes, channels_last=args.channels_last,
        min_seconds=args.min_seconds, min_reps=args.min_reps,
    )
    return _emit(attack_bench, result, args.json)


def _bench_train(args: argparse.Namespace) -> int:
    from rft_fast.bench import train_bench

    result = train_bench.run(
        device=_device(args), models=tuple(args.models), batch=args.batch, image_size=args.image_size,
        attack_steps=args.attack_steps, dtypes=tuple(args.dtypes), losses=tuple(args.losses),
        min_seconds=args.min_seconds, min_reps=args.min_reps,
    )
    return _emit(train_bench, result, args.json)


def _bench_eval(args: argparse.Namespace) -> int:
    from rft_fast.bench import eval_bench

    datasets = None
    if args.datasets:
        datasets = {}
        for item in args.datasets:
            name, _, root = item.partition("=")
            datasets[name] = root or None
    try:
        result = eval_bench.run(
            device=_device(args), model=args.model, n=args.n, image_size=args.image_size, mode=args.mode,
            norms=tuple(args.norms), datasets=datasets, cache_size=args.cache_size, worker_counts=tuple(args.workers) if args.workers else None,
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    return _emit(eval_bench, result, args.json)


def _bench_regularizers(args: argparse.Namespace) -> int:
    from rft_fast.bench import regularizer_bench

    try:
        result = regularizer_bench.run(
            device=_device(args), model=args.model, batch=args.batch, image_size=args.image_size,
            attack_steps=args.attack_steps, losses=tuple(args.losses), variants=tuple(args.variants),
            min_reps=args.min_reps, min_seconds=args.min_seconds,
        )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return _emit(regularizer_bench, result, args.json)


def _bench_tora(args: argparse.Namespace) -> int:
    from rft_fast.bench import tora_bench

    try:
        result = tora_bench.run(device=_device(args), backbones=tuple(args.models) if args.models else None,
                                batch=args.batch, image_size=args.image_size, loss=args.loss,
                                attack_steps=args.attack_steps)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return _emit(tora_bench, result, args.json)


def _int_in(low: int, high: int) -> Callable[[str], int]:
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


def _device_name(text: str) -> str:
    """An argparse type: cpu, cuda or cuda:N."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _float_above(low: float, *, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number > low (>= low when inclusive)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not (value >= low if inclusive else value > low):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return value
    return parse


_positive_float = _float_above(0.0)


def _common_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device_name, default=None, help="cpu or cuda (default: cuda if visible, else cpu)")
    p.add_argument("--threads", type=_int_in(0, 4096), default=0, help="CPU threads (default: torch's default)")
    p.add_argument("--min-seconds", type=_float_above(0.0, inclusive=True), default=0.3, help="minimum timed seconds per case")
    p.add_argument("--json", help="also write the results (with device, versions, date, command) here")


def _train_arguments(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, typed from its annotation (the config is the single source)."""
    import dataclasses

    from rft_fast.train.config import FIELD_HELP, TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type).replace(" | None", "")
        default = None if f.default is dataclasses.MISSING else f.default
        help_text = FIELD_HELP[f.name] + ("" if default is None else f" (default: {default:.6g})" if isinstance(default, float) and not isinstance(default, bool) else f" (default: {default})")
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            conv = {"int": int, "float": _fraction, "str": str}[kind]
            p.add_argument(flag, type=conv, default=argparse.SUPPRESS, required=f.default is dataclasses.MISSING, help=help_text)


def _fraction(text: str) -> float:
    """A float, also written as a fraction such as 4/255."""
    try:
        num, _, den = text.partition("/")
        return float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.01 or 4/255, got {text!r}") from None


def _train(args: argparse.Namespace) -> int:
    from rft_fast.train import TrainConfig, fit

    values = {k: v for k, v in vars(args).items() if k not in ("command", "func", "resume", "progress", "debug")}
    try:
        config = TrainConfig(**values)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None

    def show(row: dict) -> None:
        print(json.dumps(row), flush=True)

    try:
        result = fit(config, callback=show, resume=args.resume, progress=args.progress)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"status: {result.status}" + (f" ({result.message})" if result.message else ""))
    if result.checkpoint is not None:
        print(f"checkpoint: {result.checkpoint} ({result.checkpoint.stat().st_size / 2**20:.1f} MiB)")
    return 0 if result.status != "diverged" else 1


def _models(args: argparse.Namespace) -> int:
    from rft_fast import models

    try:
        specs = models.list_backbones(args.pattern, arch=args.arch, size=args.size, pretraining=args.pretraining)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(models.format_table(specs))
    return 0


def _models_convert(args: argparse.Namespace) -> int:
    from rft_fast import models

    try:
        out = models.convert_checkpoint(args.name, args.src, args.dst)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out}")
    return 0


def _default_cache() -> str:
    import os

    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rft-fast" / "corruptions")


def _threat_list(text: str) -> tuple[str, ...]:
    from rft_fast.eval import ALL_THREATS

    threats = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in threats if t not in ALL_THREATS]
    if unknown or not threats:
        raise argparse.ArgumentTypeError(f"threats must be a comma-separated subset of {','.join(ALL_THREATS)}, got {text!r}")
    return threats


def _number_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (fractions such as 1/4 allowed), e.g. 0,0.25,0.5."""
    values = tuple(_fraction(t.strip()) for t in text.split(",") if t.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.25,0.5, got {text!r}")
    return values


def _show_measurement(m) -> None:
    """One line per stored measurement while `rft-fast eval` runs."""
    if m.threat == "smoothing-L2":
        what = f"{m.mode} " + ("smoothed" if m.eps is None else f"r={m.eps:g}")
    else:
        what = m.corruption or m.eps or ""
    print(f"{m.threat:<12} {what:<18} {m.accuracy:.4f}", flush=True)


def _eval_model(args: argparse.Namespace, device: str):
    """(model, test split, RunInfo, source key) from a `rft-fast train` checkpoint or --backbone/--weights."""
    from rft_fast import data, models
    from rft_fast.eval import RunInfo
    from rft_fast.train import load_trained

    if args.checkpoint is not None:
        if args.backbone or args.weights:
            raise SystemExit("error: give either a checkpoint or --backbone with --weights, not both")
        model, config = load_trained(args.checkpoint, device)
        dataset, root, size = config.dataset, args.data_root or config.data_root, config.image_size
        run = RunInfo(args.run_id or config.run_id(), dataset, config.backbone, config.loss, config.protocol, config.hparams())
    else:
        if not (args.backbone and args.weights and args.dataset):
            raise SystemExit("error: without a checkpoint, --backbone, --weights and --dataset are required")
        dataset, root, size = args.dataset, args.data_root, args.image_size
        splits = data.build(dataset, root, image_size=size)
        model = models.load_finetuned(args.backbone, splits.num_classes, args.weights, image_size=size).to(device).eval()
        run = RunInfo(args.run_id or Path(args.weights).stem, dataset, args.backbone, args.loss, args.protocol, {})
    from rft_fast.results.importing import NAMESPACE

    if run.run_id.startswith(NAMESPACE + ":"):
        raise SystemExit(f"error: --run-id {run.run_id!r}: ids starting with '{NAMESPACE}:' are kept for imported rows")
    splits = data.build(dataset, root, image_size=size)
    return model, splits.test, run, {"dataset": dataset, "split": "test", "image_size": size}


def _eval(args: argparse.Namespace) -> int:
    from rft_fast.eval import EvalSettings, evaluate
    from rft_fast.grid.runner import reason
    from rft_fast.results import Store, format_table

    device = _device(args)
    try:
        settings = EvalSettings(
            threats=args.threats, n=args.n, subset_seed=args.subset_seed, mode=args.mode,
            eps={"Linf": args.eps_linf, "L2": args.eps_l2, "L1": args.eps_l1}, corruption_setting=args.corruptions,
            severity=args.severity, cache_dir=None if args.no_cache else args.cache_dir, batch_size=args.batch_size,
            workers=args.workers, seed=args.seed, smoothing_sigmas=args.sigma, smoothing_radii=args.radii,
            smoothing_n0=args.smoothing_n0, smoothing_n=args.smoothing_n, smoothing_alpha=args.smoothing_alpha,
            smoothing_batch_size=args.smoothing_batch_size,
        )
        model, test_set, run, key = _eval_model(args, device)
        failed: dict[str, str] = {}

        def on_failure(threat: str, error: Exception) -> None:
            failed[threat] = reason(error)
            print(f"{threat}: failed: {failed[threat]}", file=sys.stderr, flush=True)

        with Store(args.store) as store:
            rows = evaluate(model, test_set, run, settings, store=store, source_key=key, progress=args.progress,
                            on_result=_show_measurement, on_failure=on_failure)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if rows:
        print(format_table(rows))
    print(f"stored {len(rows)} measurements in {args.store} (run id {run.run_id})"
          + (f"; {len(failed)} threat(s) failed: " + "; ".join(f"{t}: {r}" for t, r in failed.items()) if failed else ""))
    return 1 if failed else 0


def _results(args: argparse.Namespace) -> int:
    from rft_fast.results import Store, format_table, to_csv, to_json
    from rft_fast.results.export import FAILURE_FIELDS, failure_rows, records, wide_rows

    if not Path(args.store).is_file():
        raise SystemExit(f"error: no results store at {args.store} (run `rft-fast eval` first or pass --store)")
    filters = {k: getattr(args, k) for k in ("run_id", "dataset", "backbone", "loss", "protocol", "threat", "mode") if getattr(args, k)}
    with Store(args.store) as store:
        try:
            # Failed grid stages are per configuration ("backbone|loss|protocol|dataset"): filtered on those parts.
            failures = failure_rows(store.stages(status="failed"),
                                    **{k: getattr(args, k) for k in ("backbone", "loss", "protocol", "dataset")})
            if args.failures:
                rows = failures
            elif args.wide:
                model_filters = {k: v for k, v in filters.items() if k not in ("threat", "mode")}
                rows = records(wide_rows(store, mode=args.mode, **model_filters), hparams=args.hparams)
            else:
                rows = records(store.query(**filters), hparams=args.hparams)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    if args.format == "table":
        text = "(no failed stages)" if args.failures and not rows else format_table(rows)
        if args.output:
            Path(args.output).write_text(text + "\n")
            if failures and not args.failures:
                print(f"{len(failures)} failed stage(s): `rft-fast results --failures --store {args.store}` lists them")
        else:
            print(text)
            if failures and not args.failures:
                print(f"\nfailed stages ({len(failures)}):\n{format_table(failures)}")
        return 0
    if args.format == "csv":
        def writer(rows, f):
            to_csv(rows, f, fieldnames=FAILURE_FIELDS if args.failures else None)
    else:
        writer = to_json
    if args.output:
        with open(args.output, "w", newline="") as f:
            writer(rows, f)
        print(f"wrote {len(rows)} rows to {args.output}")
    else:
        writer(rows, sys.stdout)
    return 0


def _grid(args: argparse.Namespace) -> int:
    import time as _time

    from rft_fast.grid import format_plan, load_spec, plan, read_bench
    from rft_fast.grid.spec import validate

    try:
        spec = load_spec(args.spec)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.dry_run:
        bench = read_bench(sorted(Path(args.bench_results).glob("train-*.json")))
        try:
            summary = plan(spec, bench or None, gpus=args.gpus)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        states = _grid_states(spec)
        if args.json:
            summary["status"] = {key: {"state": state, "why": why} for key, (state, why) in states.items()}
            print(json.dumps(summary, indent=2, default=str))
        else:
            print(format_plan(summary))
            _show_states(spec, states)
        if not bench:
            print(f"(no train-*.json in {args.bench_results}: run `rft-fast bench train` for a step-time estimate)")
        return 0
    from rft_fast.grid.runner import TRIAL_STATES, TUNE_DIR, disk_use, run_grid

    start = _time.perf_counter()
    best: dict[str, float] = {}
    print(f"grid {spec.name}: results -> {spec.store}, Tune logs -> {Path(spec.out_dir) / TUNE_DIR}", flush=True)

    def show(i: int, n: int, outcome) -> None:
        elapsed = _time.perf_counter() - start
        eta = elapsed / (i + 1) * (n - i - 1)
        if outcome.best_metric is not None:
            best[outcome.key] = outcome.best_metric
        line = f"[{i + 1}/{n}] {outcome.key}: {outcome.status}"
        details = []
        if outcome.best_metric is not None:
            details.append(f"best {spec.asha.metric} {outcome.best_metric:.4f}")
        if outcome.trials:
            details.append("trials: " + ", ".join(f"{outcome.trials.get(k, 0)} {k}" for k in TRIAL_STATES))
        if outcome.resumed:
            details.append("tuning resumed")
        if details:
            line += f" ({'; '.join(details)})"
        if outcome.message:
            line += f": {outcome.message}"
        line += f"  elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min"
        if best:
            line += f", best so far {min(best.values()) if spec.asha.mode == 'min' else max(best.values()):.4f}"
        print(line, flush=True)

    problems = validate(spec)
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        outcomes = run_grid(spec, address=args.address, progress=progress, on_config=show)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    failed = [o for o in outcomes if o.status == "failed"]
    summary = f"{len(outcomes) - len(failed)}/{len(outcomes)} done, {len(failed)} failed"
    if failed:
        summary += ": " + "; ".join(f"{o.key}: {o.message}" for o in failed)
    print(summary, flush=True)
    print(f"disk: {spec.out_dir} holds {disk_use(spec.out_dir) / 2**20:.0f} MiB "
          f"(Tune logs and checkpoints {disk_use(Path(spec.out_dir) / TUNE_DIR) / 2**20:.0f} MiB)", flush=True)
    return 1 if failed else 0


def _grid_states(spec) -> dict[str, tuple[str, str]]:
    """config key -> (state, why) against the spec's store (all "new" when there is no store yet)."""
    from rft_fast.grid import expand
    from rft_fast.grid.runner import config_status
    from rft_fast.results import Store

    configs = expand(spec)
    if not Path(spec.store).is_file():
        return {c.key: ("new", "no results store yet") for c in configs}
    with Store(spec.store) as store:
        return {c.key: config_status(spec, store, c) for c in configs}


def _show_states(spec, states: dict[str, tuple[str, str]]) -> None:
    from rft_fast.grid.runner import CONFIG_STATES

    counts = [f"{sum(s == state for s, _ in states.values())} {state}" for state in CONFIG_STATES]
    print(f"status against {spec.store}: " + ", ".join(c for c in counts if not c.startswith("0 ")))
    for key, (state, why) in states.items():
        if state != "done":
            print(f"  {key}: {state}: {why}")


def _report(args: argparse.Namespace) -> int:
    from rft_fast import report
    from rft_fast.results import Store
    from rft_fast.results.export import attack_modes

    if not Path(args.store).is_file():
        raise SystemExit(f"error: no results store at {args.store}")
    with Store(args.store) as store:
        modes = attack_modes(store)
        mode = args.mode or (modes[0] if len(modes) == 1 else "standard")
        rows = report.rows_from_store(store, mode=mode)
        failures = store.stages(status="failed")
    if not rows:
        failed = f" ({len(failures)} failed stage(s): `rft-fast results --failures`)" if failures else ""
        raise SystemExit(f"error: {args.store} holds no {mode} results yet{failed}")
    path = report.write(rows, Path(args.out), mode=mode, failures=failures)
    print(f"wrote {path} (attack mode {mode}, {len(rows)} configurations, {len(failures)} failed stages)")
    others = [m for m in modes if m != mode]
    if others:
        print(f"the store also holds {others[0]} attack rows: `rft-fast report --mode {others[0]}` reports those")
    return 0


def _results_import(args: argparse.Namespace) -> int:
    from rft_fast.results import Store
    from rft_fast.results.importing import import_csv

    try:
        with Store(args.store) as store:
            count = import_csv(args.file, store, run_prefix=args.prefix, scale=args.scale)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"imported {count} measurements into {args.store}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from rft_fast import data

    print(data.format_table())
    return 0


def _model_bench_args(p: argparse.ArgumentParser, batch: int | None, image_size: int | None) -> None:
    """What the model-level suites (trades, attack, train) share: timm models, batch, resolution."""
    _common_bench_args(p)
    p.set_defaults(min_seconds=0.0)
    p.add_argument("--models", nargs="+", default=["resnet50", "convnext_tiny", "vit_small_patch16_224"], help="timm names")
    p.add_argument("--batch", type=_int_in(1, 65536), default=batch)
    p.add_argument("--image-size", type=_int_in(8, 2048), default=image_size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rft-fast", description="Fast adversarially robust fine-tuning toolkit.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure (accepted anywhere)")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="throughput and memory benchmarks against plain PyTorch references")
    bench_sub = bench.add_subparsers(dest="suite", required=True)
    b_ops = bench_sub.add_parser(
        "ops",
        help="project / pgd_step / apgd_step per norm and backend vs torch eager",
        description="Median time, effective GB/s (ideal bytes read + written / time), speed-up over the "
        "torch eager reference and the measured copy bandwidth, all in one run.",
    )
    _common_bench_args(b_ops)
    b_ops.add_argument("--shapes", type=_shape, nargs="+", help="e.g. 64x3x224x224 256x3x32x32 (the default)")
    b_ops.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    b_ops.add_argument("--norms", nargs="+", choices=ops.NORMS, default=list(ops.NORMS))
    b_ops.add_argument("--ops", nargs="+", choices=["project", "pgd_step", "apgd_step"], default=["project", "pgd_step", "apgd_step"])
    b_ops.add_argument("--backends", nargs="+", choices=list(ops.BACKENDS), help="default: all available (torch always)")
    b_ops.set_defaults(func=_bench_ops)

    b_kl = bench_sub.add_parser(
        "kl",
        help="TRADES objective (CE + beta KL) forward+backward per backend vs torch eager",
        description="Time, GB/s (6 N C elements moved), speed-up over eager and copy bandwidth per (N, C).",
    )
    _common_bench_args(b_kl)
    b_kl.add_argument("--classes", type=_int_in(2, 10**6), nargs="+", default=[10, 102, 1000, 21843])
    b_kl.add_argument("--batches", type=_int_in(1, 65536), nargs="+", default=[64, 256])
    b_kl.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    b_kl.add_argument("--backends", nargs="+", choices=list(ops.BACKENDS), help="default: all available (torch always)")
    b_kl.set_defaults(func=_bench_kl)

    b_tr = bench_sub.add_parser(
        "trades",
        help="a TRADES step (attack + loss + backward), standard vs memory-saving: time, peak memory, max batch",
        description="Peak memory: CUDA allocator peak on GPU; saved-activation peak (autograd hooks) everywhere.",
    )
    _model_bench_args(b_tr, batch=64, image_size=224)
    b_tr.add_argument("--attack-steps", type=_int_in(1, 10_000), default=10)
    b_tr.add_argument("--max-memory-gb", type=_positive_float, default=None, help="also find the largest batch under this cap")
    b_tr.set_defaults(func=_bench_trades)

    b_at = bench_sub.add_parser(
        "attack",
        help="APGD-CE images/s: rft-fast vs pyautoattack's APGD vs the plain reference, with robust accuracy",
        description="Median seconds per batch and images/s of APGD (default: CE, Linf 4/255, 10 steps) for each "
        "model x dtype x implementation, the robust accuracy each reaches on the same points, and the speed-up "
        "over pyautoattack (same dtype, and its float32). Random-init timm models; labels = clean predictions. "
        "rft-fast = select='loss' (training attack), rft-fast-aa = select='misclassified' (AutoAttack semantics).",
    )
    _model_bench_args(b_at, batch=128, image_size=224)
    b_at.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"],
                      help="bfloat16: the model's forward/backward under autocast, attack arithmetic float32")
    b_at.add_argument("--impls", nargs="+", choices=["rft-fast", "rft-fast-aa", "pyautoattack", "reference"],
                      help="default: all available")
    b_at.add_argument("--norm", choices=ops.NORMS, default="Linf")
    b_at.add_argument("--eps", type=_positive_float, default=4 / 255, help="default 4/255 (the study's training eps)")
    b_at.add_argument("--steps", type=_int_in(1, 10_000), default=10)
    b_at.add_argument("--restarts", type=_int_in(1, 1000), default=1)
    b_at.add_argument("--num-classes", type=_int_in(2, 10**6), default=10)
    b_at.add_argument("--channels-last", action="store_true", help="model and images in channels_last (all impls)")
    b_at.add_argument("--min-reps", type=_int_in(1, 10**6), default=3, help="timed repetitions per case (after one warm-up)")
    b_at.set_defaults(func=_bench_attack)

    b_train = bench_sub.add_parser(
        "train",
        help="one training step (APGD-CE K steps + Classic AT or TRADES + AdamW): rft-fast vs the reference loop",
        description="Images/s and peak memory of rft-fast's training step (fused attack ops, memory-saving TRADES) "
        "and of the plain reference loop (eager APGD, two-graph TRADES), per model x loss x dtype in one run. "
        "Default batch x size: 64 x 224 on GPU, 8 x 64 on CPU.",
    )
    _model_bench_args(b_train, batch=None, image_size=None)
    b_train.add_argument("--attack-steps", type=_int_in(1, 10_000), default=10)
    b_train.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    b_train.add_argument("--losses", nargs="+", choices=["classic_at", "trades"], default=["classic_at", "trades"])
    b_train.add_argument("--min-reps", type=_int_in(1, 10**6), default=2, help="timed repetitions per case (after one warm-up)")
    b_train.set_defaults(func=_bench_train)

    b_eval = bench_sub.add_parser(
        "eval",
        help="seconds of one model's full evaluation (clean, AutoAttack per norm, corruptions) and of corrupted-set builds",
        description="Model part: a random-init timm model on n images (labels = its clean predictions), seconds per "
        "threat. Cache part: seconds to corrupt each dataset's 1,000-image test subset (study setting) with 2 and "
        "with all cores. Default n x size: 1000 x 224 on GPU, 16 x 64 on CPU.",
    )
    _common_bench_args(b_eval)
    b_eval.add_argument("--model", default="resnet50", help="timm name (default resnet50)")
    b_eval.add_argument("--n", type=_int_in(1, 10**7), default=None)
    b_eval.add_argument("--image-size", type=_int_in(8, 2048), default=None)
    b_eval.add_argument("--mode", choices=["standard", "fast"], default="standard")
    b_eval.add_argument("--norms", nargs="+", choices=ops.NORMS, default=list(ops.NORMS))
    b_eval.add_argument("--datasets", nargs="+", help="NAME[=ROOT] whose test split to corrupt (default: digits)")
    b_eval.add_argument("--cache-size", type=_int_in(8, 2048), default=224, help="resolution of the corrupted sets (default 224)")
    b_eval.add_argument("--workers", type=_int_in(0, 256), nargs="+", help="worker counts to time (default: 2 and all cores)")
    b_eval.set_defaults(func=_bench_eval)

    b_reg = bench_sub.add_parser(
        "regularizers",
        help="training-step overhead of GRACE (Gram term, CurvatureSAM) and the consistency loss over plain Classic AT / TRADES",
        description="Median seconds and images/s of one training step (APGD-CE Linf 4/255 + loss + backward + AdamW) "
        "per loss x variant: plain, gram (GraceLoss), grace (GraceLoss + CurvatureSAM), consistency "
        "(ConsistencyLoss), and each variant's step time over the plain one. Random-init timm model.",
    )
    _common_bench_args(b_reg)
    b_reg.set_defaults(min_seconds=1.0)
    b_reg.add_argument("--model", default="test_resnet", help="timm name (default test_resnet)")
    b_reg.add_argument("--batch", type=_int_in(1, 65536), default=16)
    b_reg.add_argument("--image-size", type=_int_in(8, 2048), default=32)
    b_reg.add_argument("--attack-steps", type=_int_in(1, 10_000), default=5)
    b_reg.add_argument("--losses", nargs="+", choices=["classic_at", "trades"], default=["classic_at", "trades"])
    b_reg.add_argument("--variants", nargs="+", choices=["plain", "gram", "grace", "consistency"],
                       default=["plain", "gram", "grace", "consistency"])
    b_reg.add_argument("--min-reps", type=_int_in(1, 10**6), default=5, help="timed repetitions per case (after one warm-up)")
    b_reg.set_defaults(func=_bench_regularizers)

    b_tora = bench_sub.add_parser(
        "tora",
        help="TORA adapters vs full fine-tuning vs linear probing: trainable parameters, step time, peak memory",
        description="One training step per method (FFT, LP, TORA phase 1, TORA phase 2) on a random-init ViT. "
        "Defaults: vit_small and vit_base at 224, batch 64, APGD-10 on GPU; vit_small at 64 px, batch 8, APGD-2 on CPU.",
    )
    _common_bench_args(b_tora)
    b_tora.add_argument("--models", nargs="+", help="registry ViT backbones (default: see above)")
    b_tora.add_argument("--batch", type=_int_in(1, 65536), default=None)
    b_tora.add_argument("--image-size", type=_int_in(8, 2048), default=None)
    b_tora.add_argument("--loss", choices=["classic_at", "trades"], default="trades")
    b_tora.add_argument("--attack-steps", type=_int_in(1, 10_000), default=None)
    b_tora.set_defaults(func=_bench_tora)

    train = sub.add_parser(
        "train",
        help="robustly fine-tune one (backbone, dataset, protocol, loss) configuration",
        description="Fine-tunes a registry backbone on a dataset with the study's protocols and losses (defaults: "
        "the study's setting). Writes config.json, metrics.jsonl (one line per epoch) and an atomic "
        "checkpoint.pt to --out-dir and resumes from it. Example: rft-fast train --backbone deit_tiny_patch16_224"
        ".fb_in1k --dataset digits --random-init --protocol FFT-5 --loss trades --out-dir runs/x",
    )
    _train_arguments(train)
    train.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="continue from --out-dir/checkpoint.pt when it exists (default: yes)")
    train.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    train.set_defaults(func=_train)

    mod = sub.add_parser("models", help="the backbone registry: list (with filters) or convert weights",
                         description="`rft-fast models` lists the study's backbones with their metadata; `models "
                         "list` filters them; `models convert` turns a downloaded checkpoint (timm, Madry lab, Singh "
                         "et al.) into the registry's state dict.")
    mod.set_defaults(func=_models, pattern="*", arch=None, size=None, pretraining=None)
    mod_sub = mod.add_subparsers(dest="action")
    lst = mod_sub.add_parser("list", help="list backbones, filtered")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on the name (default: all)")
    lst.add_argument("--arch", help="convolutional | attention | hybrid")
    lst.add_argument("--size", help="small | medium | large")
    lst.add_argument("--pretraining", help="pretraining label, e.g. 'supervised'")
    lst.set_defaults(func=_models)
    conv = mod_sub.add_parser("convert", help="convert a checkpoint into the registry's expected .safetensors")
    conv.add_argument("name", help="registry name, e.g. robust_resnet50")
    conv.add_argument("src", help="the downloaded checkpoint file")
    conv.add_argument("dst", help="output .safetensors path")
    conv.set_defaults(func=_models_convert)

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
    ev.add_argument("checkpoint", nargs="?", help="run folder or checkpoint.pt written by `rft-fast train`")
    ev.add_argument("--backbone", help="registry name (with --weights: a fine-tuned state dict, head included)")
    ev.add_argument("--weights", help="fine-tuned weights file (.safetensors / .pth)")
    ev.add_argument("--dataset", help="dataset name (with --backbone)")
    ev.add_argument("--data-root", help="dataset root (default: the checkpoint's)")
    ev.add_argument("--image-size", type=_int_in(8, 2048), default=224, help="with --backbone (default 224)")
    ev.add_argument("--loss", default="unknown", help="label stored with --backbone runs")
    ev.add_argument("--protocol", default="unknown", help="label stored with --backbone runs")
    ev.add_argument("--run-id", help="store key of this model (default: the config's hash, or the weights file name)")
    ev.add_argument("--threats", type=_threat_list, default=("clean", "Linf", "L2", "L1", "corruptions"),
                    help="comma-separated subset of clean,Linf,L2,L1,corruptions,smoothing-L2 (default: all but "
                    "smoothing-L2, which runs only when named)")
    ev.add_argument("--n", type=_int_in(1, 10**7), default=1000, help="stratified test subset size (default 1000, the study's)")
    ev.add_argument("--subset-seed", type=_int_in(0, 2**32 - 1), default=0)
    ev.add_argument("--mode", choices=["standard", "fast"], default="standard",
                    help="AutoAttack standard, or fast = APGD-CE + APGD-T (labelled 'fast' in the store)")
    ev.add_argument("--eps-linf", type=_fraction, default=4 / 255, help="default 4/255")
    ev.add_argument("--eps-l2", type=_fraction, default=2.0, help="default 2.0")
    ev.add_argument("--eps-l1", type=_fraction, default=75.0, help="default 75")
    ev.add_argument("--corruptions", choices=["study", "full"], default="study",
                    help="study: 11 types at severity 3, one per image; full: 15 types x 5 severities")
    ev.add_argument("--severity", type=_int_in(1, 5), default=3)
    ev.add_argument("--cache-dir", default=_default_cache(), help="corrupted test sets (default: ~/.cache/rft-fast/corruptions)")
    ev.add_argument("--no-cache", action="store_true", help="do not read or write the corruption cache")
    ev.add_argument("--store", default="results.sqlite", help="SQLite results store (default: ./results.sqlite)")
    ev.add_argument("--device", type=_device_name, default=None, help="cpu or cuda (default: cuda if visible)")
    ev.add_argument("--threads", type=_int_in(0, 4096), default=0, help="CPU threads (default: torch's default)")
    ev.add_argument("--batch-size", type=_int_in(1, 65536), default=None, help="attack batch (default: the largest that fits)")
    ev.add_argument("--workers", type=_int_in(0, 256), default=None, help="corruption worker processes (default: all cores)")
    ev.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="AutoAttack, corruption and smoothing-noise seed")
    sm = ev.add_argument_group("randomized smoothing (threat smoothing-L2)")
    sm.add_argument("--sigma", type=_number_list, default=(0.25,),
                    help="comma-separated noise levels sigma > 0 in pixel units, each certified separately (default 0.25)")
    sm.add_argument("--radii", type=_number_list, default=(0.0, 0.25, 0.5, 0.75, 1.0),
                    help="comma-separated L2 radii >= 0 of the stored certified accuracies (default 0,0.25,0.5,0.75,1)")
    sm.add_argument("--smoothing-n0", type=_int_in(1, 10**8), default=100, help="selection draws per image (default 100)")
    sm.add_argument("--smoothing-n", type=_int_in(1, 10**9), default=100_000, help="estimation draws per image (default 100000)")
    sm.add_argument("--smoothing-alpha", type=_positive_float, default=0.001,
                    help="failure probability of the certificate (default 0.001)")
    sm.add_argument("--smoothing-batch-size", type=_int_in(1, 10**6), default=1000, help="noisy images per forward pass (default 1000)")
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    ev.set_defaults(func=_eval)

    res = sub.add_parser("results", help="list or export the results store (table, CSV, JSON)",
                         description="Rows of the store, filtered; --wide gives one row per model with clean, Linf, "
                         "L2, L1 and common accuracy, for the attack mode the store holds (both modes: one row per "
                         "model and mode, labelled in the mode column; standard and fast never mixed in a row). The "
                         "table ends with the grid's failed stages; --failures lists only those.")
    res.add_argument("--store", default="results.sqlite")
    for name in ("run-id", "dataset", "backbone", "loss", "protocol", "threat"):
        res.add_argument(f"--{name}")
    res.add_argument("--mode", choices=["standard", "fast", "-"],
                     help="only this mode's rows (--wide: default the mode(s) the matching models have attack rows in)")
    shown = res.add_mutually_exclusive_group()
    shown.add_argument("--wide", action="store_true", help="one row per model (and attack mode): clean, Linf, L2, L1, common")
    shown.add_argument("--failures", action="store_true",
                       help="only the failed grid stages: configuration, stage, reason (filtered by --backbone, "
                       "--loss, --protocol, --dataset)")
    res.add_argument("--hparams", action="store_true", help="include the hparams column (JSON; hidden by default)")
    res.add_argument("--format", choices=["table", "csv", "json"], default="table")
    res.add_argument("--output", help="write here instead of stdout")
    res.set_defaults(func=_results)
    res_sub = res.add_subparsers(dest="action")
    imp = res_sub.add_parser("import", help="load per-configuration accuracies from a CSV (a published study's table)",
                             description="Columns: backbone, dataset, loss, protocol, clean, Linf, L2, L1, common; "
                             "optional run_id, Linf_eps, L2_eps, L1_eps, n, mode, source. One accuracy scale per file (--scale). "
                             "Run ids are kept under 'import:', so imported rows never pass for our own.")
    imp.add_argument("file")
    imp.add_argument("--store", default="results.sqlite")
    imp.add_argument("--prefix", default="import", help="run id prefix of the imported rows (always under 'import:')")
    imp.add_argument("--scale", choices=["auto", "fraction", "percent"], default="auto",
                     help="accuracy scale of the whole file: fraction in [0, 1], percent in [0, 100], or auto (percent "
                          "if some value > 1 and none in (0, 1]; fraction if all in [0, 1]; a mix is refused)")
    imp.set_defaults(func=_results_import)

    grid = sub.add_parser("grid", help="run a grid spec: ASHA on Ray Tune per configuration, evaluate the best, store",
                          description="Runs every configuration of SPEC (YAML) not yet in its results store: a Ray Tune "
                          "run with ASHA over the search space within the time budget, then the best trial's checkpoint "
                          "through `rft-fast eval` into the store. Rerun the same command after any interruption. "
                          "--dry-run prints the plan and a GPU-hours estimate from bench/results.")
    grid.add_argument("spec", help="grid spec YAML (examples/quick.yaml, examples/study.yaml)")
    grid.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, run nothing")
    grid.add_argument("--address", help="attach to an existing Ray cluster (e.g. auto or ray://host:10001)")
    grid.add_argument("--bench-results", default="bench/results", help="folder of train-*.json step times for --dry-run")
    grid.add_argument("--gpus", type=_int_in(1, 100_000), default=1, help="GPUs the --dry-run estimate assumes (default 1)")
    grid.add_argument("--json", action="store_true", help="--dry-run prints JSON, per configuration")
    grid.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="a bar per evaluation threat and corruption build (default: on when stderr is a terminal)")
    grid.set_defaults(func=_grid)

    rep = sub.add_parser("report", help="the study's analyses from the store: Borda, odds ratios, groups, plots",
                         description="Writes OUT/report.md and PNG plots from the store's results (works on partial results).")
    rep.add_argument("--store", default="results.sqlite")
    rep.add_argument("--out", default="report", help="output folder (default ./report)")
    rep.add_argument("--mode", choices=["standard", "fast"],
                     help="which AutoAttack rows to use (default: the mode the store holds; standard when it holds both)")
    rep.set_defaults(func=_report)

    ds = sub.add_parser("datasets", help="the dataset registry: names, classes, expected layout under --data-root")
    ds.set_defaults(func=_datasets)
    return parser


USER_ERRORS = (ValueError, OSError, LookupError)  # bad input, missing or unreadable files, unknown names


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. Every failure ends with one `error:` line on stderr and a non-zero exit; --debug
    (anywhere on the command line) shows the traceback instead."""
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
    except Exception as error:  # noqa: BLE001 - the one place a failure becomes an error line
        if debug:
            raise
        known = isinstance(error, (*USER_ERRORS, sqlite3.DatabaseError, yaml.YAMLError))
        text = " ".join(str(error).split()) or type(error).__name__
        kind = "" if known else f"internal error ({type(error).__name__}): "
        print(f"error: {kind}{text[:2000]} (--debug shows the traceback)", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
