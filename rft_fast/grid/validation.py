"""Everything that would stop a grid or fail its trials, found before Ray starts: each (loss, protocol, axis
values) combination's TrainConfig built with the fixed fields and each search bound and value
(`config_problems`), and the files the grid needs (`check_paths`); `validate` lists both. `fetch_missing`
downloads the registered datasets missing under their data roots (what a spec's `download: true` asks for)."""

from __future__ import annotations

from pathlib import Path

from rft_fast.data.registry import download, lookup, present
from rft_fast.grid.configs import GridSpec, expand, search_space, weights_path
from rft_fast.train.config import TrainConfig


def check_paths(spec: GridSpec) -> list[str]:
    """Problems with the files the grid needs (empty when all is there): a data root folder per registered
    dataset that needs one, your own folder / CSV file where its name says; unless random_init, weights_dir as a
    folder and each backbone's weights file; the store not a folder and out_dir not a file. Part of `validate`;
    a dry run need not."""
    problems = []
    for dataset in spec.datasets:
        info = lookup(dataset)
        if info.location is not None and not info.location.exists():
            problems.append(f"datasets: {dataset}: {info.location} does not exist")
        if not info.needs_root:
            continue
        root = spec.data_roots.get(dataset)
        if root is None:
            problems.append(f"data_roots: no entry for dataset {dataset!r}")
        elif not Path(root).is_dir():
            problems.append(f"data_roots.{dataset}: {root} is not a folder")
    if not spec.random_init:
        from_dir = [b for b in spec.backbones if b not in spec.pretrained] if spec.weights_dir is not None else []
        no_dir = bool(from_dir) and not Path(spec.weights_dir).is_dir()
        if no_dir:
            problems.append(
                f"weights_dir: {spec.weights_dir} is not a folder (it should hold <backbone>.safetensors of "
                f"{len(from_dir)} backbone(s): {', '.join(from_dir[:3])}{', ...' if len(from_dir) > 3 else ''})"
            )
        for backbone in spec.backbones:
            if no_dir and backbone in from_dir:
                continue  # said once above
            file = weights_path(spec, backbone)
            if file is None:
                problems.extend(_hub_problem(backbone))
                continue
            path = Path(file)
            key = "weights_dir" if backbone in from_dir else f"pretrained.{backbone}"
            if path.is_dir():
                problems.append(f"{key}: weights of {backbone!r} at {path} is a folder, not a file")
            elif not path.is_file():
                problems.append(f"{key}: weights of {backbone!r} not found at {path}")
    if Path(spec.store).is_dir():
        problems.append(f"store: {spec.store} is a folder; give the SQLite file's path")
    if Path(spec.out_dir).exists() and not Path(spec.out_dir).is_dir():
        problems.append(f"out_dir: {spec.out_dir} is a file, not a folder")
    return problems


def _hub_problem(backbone: str) -> list[str]:
    """Offline (HF_HUB_OFFLINE=1) hub weights must already be in the cache: the trials would fail one by one."""
    from rft_fast import models

    if not models.hub_offline() or models.cached_file(models.get(backbone)) is not None:
        return []
    return [
        f"backbones: hub weights of {backbone!r} are not in the hub cache {models.hub_cache_dir()} and HF_HUB_OFFLINE "
        "is set: run `rft-fast models fetch --spec <this spec>` on a machine with internet (same HF_HOME)"
    ]


def fetch_missing(spec: GridSpec) -> list[str]:
    """Downloads every dataset of `spec` that has a download and a data_roots entry but is not found under it
    (rft_fast.data.download); the names downloaded. A dataset without a download (Stanford Cars) that is missing
    raises rft_fast.data.fetch.FetchError with where to get it; datasets without a root are left to check_paths."""
    fetched = []
    for dataset in spec.datasets:
        info, root = lookup(dataset), spec.data_roots.get(dataset)
        if info.fetch is not None and root is not None and not present(info, root):
            download(dataset, root)
            fetched.append(dataset)
    return fetched


def validate(spec: GridSpec, *, paths: bool = True) -> list[str]:
    """Everything that would stop the grid or fail its trials, found before Ray starts: [] when it can run.

    A spec's values were checked when it was built (types and ranges, asha.metric among the metrics `fit`
    reports and mode its direction, seeds, known names, each combination's TrainConfig); this builds each
    (loss, protocol, axis values) combination's TrainConfig again, with the fixed fields and each search bound
    and value, listing every combination that fails (a spec assembled or changed in code is held to the same
    rules), then, with `paths`, adds `check_paths`: data roots, weights_dir, weights files, store, out_dir."""
    return config_problems(spec, first_only=False) + (check_paths(spec) if paths else [])


def config_problems(spec: GridSpec, *, first_only: bool) -> list[str]:
    """Builds a TrainConfig per (loss, protocol, axis values) combination (backbone and dataset change no rule):
    with the fixed fields, then the axis values, then each search bound / value in turn, so a value or a
    combination that cannot train fails now, named, rather than in every trial. Each problem starts with the key
    it comes from ("fixed", "axes.<field>", "search.<field>") and, when the grid has several combinations, ends
    with the one that fails; with first_only, at most one problem."""
    combinations = {(c.loss, c.protocol, c.variant): c for c in expand(spec)}
    problems: list[str] = []
    for config in combinations.values():
        base = {**config.train_fields(spec), "random_init": True, "pretrained_path": None}
        for name, _ in config.variant:
            base.pop(name)
        where = f" (loss {config.loss!r}, protocol {config.protocol_label})" if len(combinations) > 1 else ""
        steps = [("fixed", {})]
        if config.variant:
            steps.append(("axes." + ",".join(name for name, _ in config.variant), dict(config.variant)))
        steps += [
            (f"search.{dim.name}", {**dict(config.variant), dim.name: value})
            for dim in search_space(spec, config)
            for value in ((dim.low, dim.high) if dim.kind in ("loguniform", "uniform") else dim.values)
        ]
        for key, extra in steps:
            try:
                TrainConfig(**{**base, **extra})
            except (TypeError, ValueError) as err:
                problems.append(f"{key}: {err}{where}")
                break
        if first_only and problems:
            break
    return problems
