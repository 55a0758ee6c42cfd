"""`rft-fast grid SPEC`: a grid spec's plan (--dry-run) or its run (ASHA on Ray Tune per configuration, the best
trial evaluated into the store)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rft_fast.cli.options import REFUSED, Refused, int_in


def _grid(args: argparse.Namespace) -> int:
    from rft_fast.grid import load_spec
    from rft_fast.grid.spec import validate

    spec = load_spec(args.spec)
    if args.dry_run:
        return _dry_run(args, spec)
    from rft_fast.grid.disk import disk_use
    from rft_fast.grid.runner import TUNE_DIR, run_grid

    print(f"grid {spec.name}: results -> {spec.store}, Tune logs -> {Path(spec.out_dir) / TUNE_DIR}", flush=True)
    if spec.download:
        from rft_fast.data.fetch import FetchError
        from rft_fast.grid.validation import fetch_missing

        try:
            for dataset in fetch_missing(spec):
                print(f"downloaded {dataset} into {spec.data_roots[dataset]}", flush=True)
        except FetchError as err:
            raise Refused(f"download: {err}") from None
    problems = validate(spec)
    if problems:
        raise Refused("; ".join(problems))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    outcomes = run_grid(spec, address=args.address, progress=progress, on_config=_progress_line(spec))
    failed = [o for o in outcomes if o.status == "failed"]
    summary = f"{len(outcomes) - len(failed)}/{len(outcomes)} done, {len(failed)} failed"
    if failed:
        summary += ": " + "; ".join(f"{o.key}: {o.message}" for o in failed)
    print(summary, flush=True)
    print(
        f"disk: {spec.out_dir} holds {disk_use(spec.out_dir) / 2**20:.0f} MiB "
        f"(Tune logs and checkpoints {disk_use(Path(spec.out_dir) / TUNE_DIR) / 2**20:.0f} MiB)",
        flush=True,
    )
    return 1 if failed else 0


def _progress_line(spec):
    """on_config(i, n, outcome) for run_grid: one line per configuration with the time so far and the ETA."""
    from rft_fast.grid.runner import TRIAL_STATES

    start = time.perf_counter()
    best: dict[str, float] = {}

    def show(i: int, n: int, outcome) -> None:
        elapsed = time.perf_counter() - start
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

    return show


def _dry_run(args: argparse.Namespace, spec) -> int:
    from rft_fast.grid import format_plan, plan, read_bench

    bench = read_bench(sorted(Path(args.bench_results).glob("train-*.json")))
    summary = plan(spec, bench or None, gpus=args.gpus)
    states = _states(spec)
    if args.json:
        summary["status"] = {key: {"state": state, "why": why} for key, (state, why) in states.items()}
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_plan(summary))
        _show_states(spec, states)
    if not bench:
        print(f"(no train-*.json in {args.bench_results}: run `rft-fast bench train` for a step-time estimate)")
    return 0


def _states(spec) -> dict[str, tuple[str, str]]:
    """config key -> (state, why) against the spec's store (all "new" when there is no store yet)."""
    from rft_fast.grid import expand
    from rft_fast.grid.status import config_status
    from rft_fast.results import Store

    configs = expand(spec)
    if not Path(spec.store).is_file():
        return {c.key: ("new", "no results store yet") for c in configs}
    with Store(spec.store) as store:
        return {c.key: config_status(spec, store, c) for c in configs}


def _show_states(spec, states: dict[str, tuple[str, str]]) -> None:
    from rft_fast.grid.status import CONFIG_STATES

    counts = [f"{sum(s == state for s, _ in states.values())} {state}" for state in CONFIG_STATES]
    print(f"status against {spec.store}: " + ", ".join(c for c in counts if not c.startswith("0 ")))
    for key, (state, why) in states.items():
        if state != "done":
            print(f"  {key}: {state}: {why}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    grid = sub.add_parser(
        "grid",
        help="run a grid spec: ASHA on Ray Tune per configuration, evaluate the best, store",
        description="Runs every configuration of SPEC (YAML) not yet in its results store: a Ray Tune "
        "run with ASHA over the search space within the time budget, then the best trial's checkpoint "
        "through `rft-fast eval` into the store. Rerun the same command after any interruption. "
        "--dry-run prints the plan and a GPU-hours estimate from bench/results.",
    )
    grid.add_argument("spec", help="grid spec YAML (examples/quick.yaml, examples/study.yaml)")
    grid.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, run nothing")
    grid.add_argument("--address", help="attach to an existing Ray cluster (e.g. auto or ray://host:10001)")
    grid.add_argument(
        "--bench-results", default="bench/results", help="folder of train-*.json step times for --dry-run"
    )
    grid.add_argument(
        "--gpus", type=int_in(1, 100_000), default=1, help="GPUs the --dry-run estimate assumes (default 1)"
    )
    grid.add_argument("--json", action="store_true", help="--dry-run prints JSON, per configuration")
    grid.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a bar per evaluation threat and corruption build (default: on when stderr is a terminal)",
    )
    grid.set_defaults(func=_grid, refuses=REFUSED)
