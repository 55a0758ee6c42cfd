"""Dry-run arithmetic for a grid: how many configurations, how many hours the budget binds, and an estimate
of the work from measured training-step times (`rft-fast bench train` rows).

Everything here is an estimate and says so. The budget-bound figure is exact arithmetic on the spec (each
configuration's Tuner runs until budget_minutes, unless num_samples trials finish sooner). The step-time
estimate multiplies measured seconds per image by the images a trial sees under ASHA; what it leaves out
(Tune and process start-up, data loading, the final evaluation of the best trial) is listed in its notes.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from rft_fast import models
from rft_fast.grid.spec import Config, GridSpec, SearchDim, expand, search_space
from rft_fast.models.registry import build_timm
from rft_fast.precision import DTYPE_NAMES
from rft_fast.train.config import TrainConfig

# Split sizes (train, val) under the study's splits (DATASETS[name].split_rule, drawn by scikit-learn's
# train_test_split: ceil(fraction * n) held out): official counts where official, else carved from the full set.
# Caltech-101: 8,677 images (torchvision drops BACKGROUND_Google) -> 1,736 test, 6,941 train+val -> 5,899 train /
# 1,042 val. Oxford Pets: 3,680 trainval -> 3,128 / 552. Stanford Cars: 8,144 train -> 6,922 / 1,222. UC Merced:
# 2,100 -> 1,680 -> 1,428 / 252. digits: 1,797 -> 1,437 -> 1,221 / 216; digits3: 537 -> 429 -> 364 / 65 (both
# measured with data.build). FGVC-Aircraft and Flowers-102: official. Your own data (folder: / csv:) is counted
# from its files (`split_sizes`).
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "caltech101": (5_899, 1_042),
    "fgvc_aircraft": (3_334, 3_333),
    "flowers102": (1_020, 1_020),
    "oxford_pets": (3_128, 552),
    "stanford_cars": (6_922, 1_222),
    "uc_merced": (1_428, 252),
    "digits": (1_221, 216),
    "digits3": (364, 65),
}
BENCH_ATTACK_STEPS = 10  # `bench train` times APGD-10 + loss + backward + AdamW step (its meta "step")
_RESOLUTION = 224  # where parameter counts of bench architectures are taken


def split_sizes(dataset: str) -> tuple[int, int]:
    """(train, val) images of `dataset`: SPLIT_SIZES for a registered one, your own folder: / csv: data counted
    from its file list (data.build; no image is read, so the folder or CSV must be on this machine)."""
    from rft_fast import data
    from rft_fast.data.registry import MIN_IMAGE_SIZE

    if dataset in SPLIT_SIZES:
        return SPLIT_SIZES[dataset]
    info = data.lookup(dataset)
    if info.location is None:
        raise ValueError(f"no split sizes for dataset {dataset!r}: add (train, val) to SPLIT_SIZES")
    splits = data.build(dataset, image_size=MIN_IMAGE_SIZE)
    return len(splits.train), len(splits.val)


def asha_expected_epochs(epochs: int, grace_period: int, reduction_factor: float, max_t: int | None = None) -> float:
    """Expected epochs of one trial under ASHA, in the idealized steady state.

    Trials stop at T = min(max_t or epochs, epochs). Rungs sit at r_k = grace * eta^k for every r_k < T
    (k = 0..K-1), as in Ray's ASHAScheduler; a fraction 1/eta of the trials reaching a rung goes on. A trial
    stops at rung k with probability eta^-k (1 - 1/eta), and runs all T epochs with probability eta^-K:

        E = sum_k eta^-k (1 - 1/eta) r_k + eta^-K T

    With grace 1 and eta 2 each rung adds 1/2: FFT-50 / LP-50 (rungs 1..32, K = 6): E = 3 + 50/64 = 3.78
    epochs; FFT-5 (rungs 1, 2, 4): E = 1.5 + 5/8 = 2.13. Asynchronous promotion lets early trials through more
    often, and the trials running when the budget ends are cut, so real runs differ somewhat.
    """
    if not (epochs >= 1 and grace_period >= 1 and reduction_factor > 1 and (max_t is None or max_t >= 1)):
        raise ValueError(
            f"asha_expected_epochs needs epochs, grace_period, max_t >= 1 and reduction_factor > 1, got "
            f"{epochs}, {grace_period}, {max_t}, {reduction_factor}"
        )
    stop = min(max_t or epochs, epochs)
    eta = reduction_factor
    rungs = []
    while grace_period * eta ** len(rungs) < stop:
        rungs.append(grace_period * eta ** len(rungs))
    stopped = sum(eta**-k * (1 - 1 / eta) * r for k, r in enumerate(rungs))
    return stopped + eta ** -len(rungs) * stop


def read_bench(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The rows of `bench train` JSON files (bench/results/train-*.json), each with "device" from its meta."""
    rows = []
    for path in paths:
        payload = json.loads(Path(path).read_text())
        meta = payload.get("meta", {})
        device = f"{meta.get('device_type', '?')} {meta.get('device', '?')}"
        rows.extend({**row, "device": device} for row in payload["rows"])
    return rows


def concurrent_trials(spec: GridSpec, gpus: int) -> int:
    """Trials a configuration runs at once on `gpus` GPUs (Tune packs floor(gpus / gpus_per_trial))."""
    n = math.floor(gpus / spec.resources.gpus_per_trial + 1e-9)
    if n < 1:
        raise ValueError(f"resources.gpus_per_trial ({spec.resources.gpus_per_trial}) exceeds the {gpus} GPU(s)")
    return n


def plan(spec: GridSpec, bench_results: list[dict[str, Any]] | None = None, *, gpus: int = 1) -> dict[str, Any]:
    """The dry run: configurations per axis, search dims per protocol, trials, budget-bound hours on `gpus`
    GPUs (configurations run one after another, each Tuner using every GPU), and `estimate` when bench rows
    are given."""
    configs = expand(spec)
    budget_hours = len(configs) * spec.budget_minutes / 60
    out: dict[str, Any] = {
        "name": spec.name,
        "n_configs": len(configs),
        "axes": {
            **{axis: len(getattr(spec, axis)) for axis in ("backbones", "losses", "protocols", "datasets")},
            **{name: len(values) for name, values in spec.axes.items()},
        },
        "search": {
            protocol: [
                d.name
                for d in search_space(spec, Config(spec.backbones[0], spec.losses[0], protocol, spec.datasets[0]))
            ]
            for protocol in spec.protocols
        },
        "trials_per_config": spec.num_samples if spec.num_samples is not None else "unlimited within the budget",
        "budget_minutes_per_config": spec.budget_minutes,
        "gpus": gpus,
        "concurrent_trials": concurrent_trials(spec, gpus),
        "budget_bound_hours": budget_hours,
        "budget_bound_gpu_hours": budget_hours * gpus,
    }
    if bench_results is not None:
        out["estimate"] = estimate(spec, bench_results, gpus=gpus)
    return out


def estimate(
    spec: GridSpec, bench_results: list[dict[str, Any]], *, gpus: int = 1, impl: str = "rft-fast"
) -> dict[str, Any]:
    """Hours from measured step times (rows of `bench train`, implementation `impl`).

    Per configuration: seconds per training image = median_s / batch of the bench row for the backbone's timm
    architecture (same loss, bf16 when the grid uses AMP, batch closest to the grid's), scaled by pixels
    (image_size / row size)^2 and by attack passes (attack_steps + 1) / 11. An architecture without rows takes
    the measured one nearest in parameter count, scaled by the parameter ratio: "extrapolated". Validation
    images cost (val_steps + 1) / (attack_steps + 1) of a training image. An epoch is train images x that
    + validation images x theirs; a trial runs `asha_expected_epochs`. Linear probing is costed as full
    fine-tuning (the attack still backpropagates through the backbone): an upper bound.
    Hours per configuration: the budget when trials are unlimited, else the time num_samples trials take at
    `concurrent_trials`, capped by the budget.
    """
    rows = [r for r in bench_results if r.get("impl") == impl]
    if not rows:
        raise ValueError(f"no bench rows with impl {impl!r} (of {len(bench_results)} rows)")
    parallel = concurrent_trials(spec, gpus)
    budget_s = spec.budget_minutes * 60
    per_config = []
    for config in expand(spec):
        train = TrainConfig(**config.train_fields(spec), **{d.name: _sample(d) for d in search_space(spec, config)})
        n_train, n_val = split_sizes(config.dataset)
        sec, source = _seconds_per_image(rows, models.get(config.backbone).timm_name, train)
        if train.max_batches is not None:
            n_train = min(n_train, train.max_batches * train.batch_size)
        if train.val_samples is not None:
            n_val = min(n_val, train.val_samples)
        epoch_s = sec * (n_train + n_val * (train.val_steps + 1) / (train.attack_steps + 1))
        epochs = asha_expected_epochs(
            train.num_epochs, spec.asha.grace_period, spec.asha.reduction_factor, spec.asha.max_t
        )
        trial_s = epochs * epoch_s
        config_s = budget_s if spec.num_samples is None else min(budget_s, spec.num_samples * trial_s / parallel)
        per_config.append(
            {
                "key": config.key,
                "source": source,
                "seconds_per_image": sec,
                "epoch_seconds": epoch_s,
                "asha_expected_epochs": epochs,
                "expected_trial_seconds": trial_s,
                "full_trial_seconds": train.num_epochs * epoch_s,
                "trials_within_budget": parallel * budget_s / trial_s if trial_s > 0 else math.inf,
                "hours": config_s / 3600,
            }
        )
    hours = sum(c["hours"] for c in per_config)
    return {
        "bench_devices": sorted({r.get("device", "?") for r in rows}),
        "gpus": gpus,
        "concurrent_trials": parallel,
        "budget_bound_hours": len(per_config) * budget_s / 3600,
        "estimated_hours": hours,
        "estimated_gpu_hours": hours * gpus,
        "measured_configs": sum(c["source"] == "measured" for c in per_config),
        "extrapolated_configs": sum(c["source"] != "measured" for c in per_config),
        "configs": per_config,
        "notes": [
            "estimates: step times come from the bench device(s) listed, which may not be the grid's",
            "ASHA epochs per trial are the idealized expectation (asha_expected_epochs)",
            "not counted: Tune / process start-up, data loading, the best trial's evaluation",
            "LP-50 is costed as full fine-tuning (an upper bound)",
        ],
    }


def _sample(dim: SearchDim) -> Any:
    """A representative value of a search dim (its cost does not depend on the value)."""
    return dim.low if dim.kind in ("loguniform", "uniform") else dim.values[0]


def _seconds_per_image(rows: list[dict[str, Any]], arch: str, train: TrainConfig) -> tuple[float, str]:
    """Seconds per training image of `arch` for `train`'s settings, and "measured" or "extrapolated from X"."""
    measured = sorted({r["model"] for r in rows})
    if arch in measured:
        base, source = arch, "measured"
    else:
        target = _params(arch)
        base = min(measured, key=lambda m: abs(math.log(target / _params(m))))
        source = f"extrapolated from {base} by parameters"
    dtype = DTYPE_NAMES["bf16" if train.amp == "auto" else train.amp]  # auto: the grid's GPUs have native bf16
    row = min(
        (r for r in rows if r["model"] == base),
        key=lambda r: (r["loss"] != train.loss, r["dtype"] != dtype, abs(math.log(r["batch"] / train.batch_size))),
    )
    sec = row["median_s"] / row["batch"]
    sec *= (train.image_size / row.get("size", train.image_size)) ** 2
    sec *= (train.attack_steps + 1) / (BENCH_ATTACK_STEPS + 1)
    if base != arch:
        sec *= _params(arch) / _params(base)
    return sec, source


@functools.cache
def _params(arch: str) -> int:
    """Parameters of timm architecture `arch` without its classifier (built on the meta device)."""
    with torch.device("meta"):
        model = build_timm(arch, 0, _RESOLUTION)
    return sum(p.numel() for p in model.parameters())


def format_hours(hours: float, unit: str = "h") -> str:
    """Hours for people, never a 300-digit number: "3,360.0 h", whole hours from 100,000 ("1,234,567 h"), three
    significant digits from a billion ("1.26e+12 h"); from a year (8,766 h) on, the years too ("(~1.4 years)")."""
    if not math.isfinite(hours):
        return f"{hours} {unit}"
    text = f"{hours:,.1f}" if hours < 1e5 else f"{hours:,.0f}" if hours < 1e9 else f"{hours:.3g}"
    years = hours / 8766  # 365.25 days
    if years >= 1:
        text += f" {unit} (~{years:,.1f} years)" if years < 1e5 else f" {unit} (~{years:.3g} years)"
        return text
    return f"{text} {unit}"


def format_plan(summary: dict[str, Any]) -> str:
    """The dry run as text: the plan's counts, the budget-bound hours and, when present, the step-time
    estimate with the bench device(s) it rests on (per configuration only in the JSON form)."""
    axes = " x ".join(f"{n} {axis}" for axis, n in summary["axes"].items())
    lines = [
        f"grid {summary['name']!r}: {summary['n_configs']} configurations ({axes})",
        f"trials per configuration: {summary['trials_per_config']}, "
        f"{summary['concurrent_trials']} at a time on {summary['gpus']} GPU(s)",
    ]
    lines += [
        f"  search over {', '.join(dims) or 'nothing'} for {protocol}" for protocol, dims in summary["search"].items()
    ]
    lines.append(
        f"budget: {summary['budget_minutes_per_config']:,g} min per configuration -> at most "
        f"{format_hours(summary['budget_bound_hours'])} ({format_hours(summary['budget_bound_gpu_hours'], 'GPU-hours')})"
    )
    est = summary.get("estimate")
    if est is not None:
        lines.append(
            f"estimate from measured step times ({'; '.join(est['bench_devices'])}): {format_hours(est['estimated_hours'])} "
            f"({format_hours(est['estimated_gpu_hours'], 'GPU-hours')}); {est['measured_configs']} configurations measured, "
            f"{est['extrapolated_configs']} extrapolated by parameter count"
        )
        bound = sum(c["hours"] >= summary["budget_minutes_per_config"] / 60 - 1e-9 for c in est["configs"])
        lines.append(f"  {bound} of {len(est['configs'])} configurations use their whole budget")
        lines += [f"  note: {note}" for note in est["notes"]]
    return "\n".join(lines)
