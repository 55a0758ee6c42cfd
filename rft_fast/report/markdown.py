"""`write`: the report as one markdown file with its PNG plots beside it (what `rft-fast report` produces)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rft_fast.report import plots
from rft_fast.report.analyses import (
    FEATURES,
    MEDALS,
    TIE_TOLERANCE,
    borda,
    group_means,
    ordered,
    size_medals,
    tier1_odds,
    trades_vs_classic,
)
from rft_fast.report.intervals import wilson
from rft_fast.report.rows import ACCURACIES, Row, check_unique
from rft_fast.results import ATTACKS, STUDY_CORRUPTION, STUDY_SEVERITY, Stage

RANKING_TOP = 10  # rows per dataset / accuracy ranking
NO_DATA = "_Not enough data yet._"
MODE_NAMES = {
    "standard": "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square)",
    "fast": "AutoAttack's APGD-CE + APGD-T only, without FAB-T and Square (robust accuracy can be higher "
    "than under AutoAttack standard)",
}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _acc(value: float | None, n: int | None) -> str:
    """An accuracy in percent with its 95% Wilson interval from n: "62.5 [35.4, 83.6]"; no interval without n."""
    interval = None if value is None else wilson(value, n)
    return _pct(value) if interval is None else f"{_pct(value)} [{_pct(interval[0])}, {_pct(interval[1])}]"


def _row_acc(row: Row, accuracy: str) -> str:
    return _acc(getattr(row, accuracy), row.n.get(accuracy))


def _eps(threat: str, eps: float) -> str:
    """Linf radii as k/255 where they are one (4/255 = 0.0157), others plainly (2, 75)."""
    k = eps * 255
    if threat == "Linf" and round(k) >= 1 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255 = {eps:.4f}"
    return f"{eps:g}"


def _spread(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def _header(rows: Sequence[Row], mode: str | None) -> list[str]:
    """What the numbers are: attack mode, threat models and eps, n per accuracy, intervals, initialization."""
    threats = ["clean (no attack)"]
    for threat in ATTACKS:
        measured = [r for r in rows if getattr(r, threat) is not None]
        radii: dict[float, int] = {}
        for r in measured:
            if threat in r.eps:
                radii[r.eps[threat]] = radii.get(r.eps[threat], 0) + 1
        if not measured:
            threats.append(f"{threat} not measured")
        elif not radii:
            threats.append(f"{threat} (eps not recorded)")
        elif len(radii) == 1:
            threats.append(f"{threat} eps {_eps(threat, next(iter(radii)))}")
        else:
            threats.append(
                f"{threat} eps "
                + ", ".join(f"{_eps(threat, e)} ({_count(k, 'configuration')})" for e, k in sorted(radii.items()))
                + " (**several radii: these accuracies are not comparable across them**)"
            )
    threats.append(f"common: corruption {STUDY_CORRUPTION!r} (the study's 11 types) at severity {STUDY_SEVERITY}")
    counts = []
    for accuracy in ACCURACIES:
        measured = [r for r in rows if getattr(r, accuracy) is not None]
        known = [r.n[accuracy] for r in measured if accuracy in r.n]
        text = "–" if not measured else "unknown" if not known else _spread(known)
        if known and len(known) < len(measured):
            text += f" (unknown for {len(measured) - len(known)})"
        counts.append(f"{accuracy} {text}")
    all_n = [k for r in rows for a, k in r.n.items() if getattr(r, a) is not None]
    widest = ""
    if all_n:
        low, high = wilson(0.5, min(all_n))
        widest = (
            f" At the smallest n ({min(all_n)}) the interval around 50% is ±{100 * (high - low) / 2:.1f} "
            "points: accuracies whose intervals overlap are not shown to differ."
        )
    lines = [
        f"- Attack mode: **{mode}**, {MODE_NAMES.get(mode, mode)}." if mode else "- Attack mode: not stated.",
        f"- Threat models: {'; '.join(threats)}.",
        f"- Test images per accuracy (n): {'; '.join(counts)}.",
        "- Accuracies are in percent with a 95% Wilson score interval [low, high] from their n (none where n is "
        f"unknown); group means are means over configurations, without an interval.{widest}",
    ]
    random = [r for r in rows if r.random_init is True]
    unknown = [r for r in rows if r.random_init is None]
    if random:
        share = "all" if len(random) == len(rows) else f"{len(random)} of {len(rows)}"
        lines.append(
            f"- **Randomly initialized: {share} configurations' models were trained from random weights "
            "(hparams random_init: true), not from pretrained backbones: a pipeline check, not a measure of "
            "the backbones.** The table of all configurations marks them (init: random)."
        )
    elif not unknown:
        lines.append(
            "- Initialization: every model was fine-tuned from pretrained weights (hparams random_init: false)."
        )
    if unknown:
        lines.append(
            f"- Initialization not recorded for {_count(len(unknown), 'configuration')} (no random_init in "
            "their hparams: imported results or `rft-fast eval --weights`)."
        )
    return lines + [""]


def _all(rows: Sequence[Row]) -> list[str]:
    """Every configuration's five accuracies with their intervals."""

    def sort_key(r: Row) -> tuple:
        return (protocols.index(r.protocol), datasets.index(r.dataset), r.backbone, r.loss)

    protocols = ordered("protocol", {r.protocol for r in rows})
    datasets = ordered("dataset", {r.dataset for r in rows})
    init = {True: "random", False: "pretrained", None: "–"}
    body = [
        [r.protocol, r.dataset, r.backbone, r.loss, init[r.random_init], *(_row_acc(r, a) for a in ACCURACIES)]
        for r in sorted(rows, key=sort_key)
    ]
    return _table(["protocol", "dataset", "backbone", "loss", "init", *ACCURACIES], body)


def _failed(failures: Sequence[Stage]) -> list[str]:
    failed = [s for s in failures if s.status == "failed"]
    if not failed:
        return ["No failed stages.", ""]
    intro = [
        f"{_count(len(failed), 'stage')} of the grid failed, so their accuracies are missing above; "
        "configuration is `backbone|loss|protocol|dataset`. `rft-fast results --failures` lists them, and the "
        'traceback of each is in its detail (`Store.stages(status="failed")`).',
        "",
    ]
    return intro + _table(
        ["configuration", "stage", "reason"], [[s.config, s.stage, " ".join(s.reason.split())] for s in failed]
    )


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else "inf" if math.isinf(value) else f"{value:.2f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table ('|' in cells escaped)."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, body), ""]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")


def _overview(rows: Sequence[Row]) -> list[str]:
    def names(field: str) -> str:
        values = ordered(field, {getattr(r, field) for r in rows})
        return f"{_count(len(values), field)} ({', '.join(values)})"

    complete = sum(r.complete for r in rows)
    backbones = len({r.backbone for r in rows})
    return [
        f"{_count(len(rows), 'configuration')}: {_count(backbones, 'backbone')}, {names('dataset')}, "
        f"{names('loss')}, {names('protocol')}. {complete} of {len(rows)} have all five accuracies (clean, Linf, "
        "L2, L1, common).",
        "",
        "Partial results are fine: Borda gives 0 points for a missing accuracy and ranks the others among the "
        "rows that have it; TRADES vs Classic AT compares a pair on the accuracies both have; tier 1 uses complete "
        "rows only. Accuracies are in percent; score_sum and geom use accuracies in [0, 1].",
        "",
    ]


def _borda(ranking: list[dict[str, Any]], protocol: str, image: str) -> list[str]:
    header = [
        "#",
        "medal",
        "backbone",
        "loss",
        "arch",
        "size",
        "pretraining",
        "points",
        "GR",
        "score_sum",
        "geom",
        "datasets",
        "missing",
    ]
    body = [
        [
            e["position"],
            e["medal"],
            e["backbone"],
            e["loss"],
            e["arch"],
            e["size"],
            e["pretraining"],
            e["points"],
            e["rank"],
            f"{e['score_sum']:.3f}",
            f"{e['geom']:.4f}",
            e["datasets"],
            e["missing"],
        ]
        for e in ranking
    ]
    return [
        f"### {protocol}",
        "",
        *_table(header, body),
        f"![Borda points, {protocol}]({image})",
        "",
        f"Medals per size class, {protocol} (the first three of each class above, with their GR):",
        "",
        *_size_medals(ranking),
    ]


def _size_medals(ranking: list[dict[str, Any]]) -> list[str]:
    """The paper's per-size table: a row per size class, a cell per medal "backbone, loss (GR k, p points)"."""

    def cell(e: dict[str, Any] | None) -> str:
        return "–" if e is None else f"{e['backbone']}, {e['loss']} (GR {e['rank']}, {e['points']} points)"

    body = [[t["size"], *(cell(t[m]) for m in MEDALS)] for t in size_medals(ranking)]
    return _table(["size", *MEDALS], body)


def _rankings(rows: Sequence[Row], protocol: str, dataset: str) -> list[str]:
    group = [r for r in rows if r.protocol == protocol and r.dataset == dataset]
    columns = []
    for accuracy in ACCURACIES:
        have = sorted(
            (r for r in group if getattr(r, accuracy) is not None),
            key=lambda r: (-getattr(r, accuracy), r.backbone, r.loss),
        )
        columns.append([f"{r.backbone} ({r.loss}) {_row_acc(r, accuracy)}" for r in have[:RANKING_TOP]])
    depth = max(map(len, columns))
    body = [[i + 1, *(c[i] if i < len(c) else "" for c in columns)] for i in range(depth)]
    return [f"### {protocol}, {dataset}", "", *_table(["#", *ACCURACIES], body)]


def _groups(rows: Sequence[Row]) -> list[str]:
    out = []
    for by in ("arch", "size", "pretraining", "loss", "protocol"):
        body = [[g[by], g["n"], *(_pct(g[a]) for a in ACCURACIES)] for g in group_means(rows, by)]
        out += [f"### By {by}", "", *_table([by, "configurations", *ACCURACIES], body)]
    return out


def _trades(rows: Sequence[Row]) -> list[str]:
    found = trades_vs_classic(rows)
    intro = [
        "Per size class and protocol, for each backbone and dataset measured with both losses: the loss with the "
        f"higher score_sum (over the accuracies both have) wins; equal sums (within {TIE_TOLERANCE:g}) are ties "
        "and left out. Odds ratio (T/C)^2 and two-sided p of Fisher's exact test on [[T, C], [C, T]].",
        "",
    ]
    if not found:
        return intro + [NO_DATA + " (no backbone and dataset measured with both TRADES and Classic AT)", ""]
    body = [
        [
            e["size"],
            e["protocol"],
            e["trades_wins"],
            e["classic_wins"],
            e["ties"],
            _ratio(e["odds_ratio"]),
            _p(e["p_value"]),
        ]
        for e in found
    ]
    return intro + _table(["size", "protocol", "TRADES wins", "Classic AT wins", "ties", "odds ratio", "p"], body)


def _tier1(rows: Sequence[Row]) -> list[str]:
    out = [
        "Tier 1: the top third (ceil(n/3), ties at the cut included) by score_sum among the complete rows of one "
        "size class and dataset (groups under 3 rows left out). Per size class and feature value: a = value in "
        "tier 1, b = value not in tier 1, c = other values in tier 1, d = other values not; odds ratio a*d/(b*c), "
        "Fisher's exact two-sided p (n/a where a row or column of the table is empty).",
        "",
    ]
    for feature in FEATURES:
        found = tier1_odds(rows, feature)
        body = [
            [e["size"], e["value"], e["a"], e["b"], e["c"], e["d"], _ratio(e["odds_ratio"]), _p(e["p_value"])]
            for e in found
        ]
        out += [f"### {feature}", ""]
        out += _table(["size", feature, "a", "b", "c", "d", "odds ratio", "p"], body) if found else [NO_DATA, ""]
    return out


def write(
    rows: Sequence[Row],
    out_dir: str | Path,
    *,
    title: str = "rft-fast report",
    mode: str | None = None,
    failures: Sequence[Stage] | None = None,
) -> Path:
    """Writes out_dir/report.md (a header with the attack `mode`, threat models, eps, n and intervals, Borda per
    protocol with medals overall and per size class, top-10 rankings per dataset and accuracy, group means, TRADES vs Classic AT, tier-1 odds
    ratios, every configuration's accuracies with 95% Wilson intervals and, given `failures` (the store's Stage
    records), a "Failed" section of the failed ones) and its PNG plots; returns the report's path."""
    if not rows:
        raise ValueError("no results to report")
    check_unique(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protocols = ordered("protocol", {r.protocol for r in rows})
    datasets = ordered("dataset", {r.dataset for r in rows})
    lines = [
        f"# {title}",
        "",
        *_header(rows, mode),
        *_overview(rows),
        "## Borda count",
        "",
        'Within a protocol, per dataset and accuracy, rows earn rankdata(method="min") points (ties share the '
        "minimum, highest accuracy most); summed over the five accuracies and the datasets. score_sum: sum of "
        "the accuracies; geom: product of the five (datasets with all five); both summed over datasets. #: the "
        "place, ties in points broken by score_sum, then names; the medals go to the first three. GR: the global "
        "rank as the paper gives it, shared by equal points (1 + the entries with more points). Under each "
        "protocol, the paper's per-size medals: the first three of each size class, with their GR.",
        "",
    ]
    for protocol in protocols:
        ranking = borda(rows, protocol)
        image = plots.borda_chart(ranking, protocol, out / f"borda_{plots.slug(protocol)}.png").name
        lines += _borda(ranking, protocol, image)
    lines += [f"## Rankings per dataset and accuracy (top {RANKING_TOP})", ""]
    for protocol in protocols:
        for dataset in datasets:
            if any(r.protocol == protocol and r.dataset == dataset for r in rows):
                lines += _rankings(rows, protocol, dataset)
    lines += ["## Group comparisons (mean accuracy, %)", "", *_groups(rows)]
    lines += ["## TRADES vs Classic AT", "", *_trades(rows)]
    lines += ["## Tier-1 odds ratios", "", *_tier1(rows)]
    scatter = plots.clean_vs_linf(rows, out / "clean_vs_linf.png").name
    lines += ["## Clean vs Linf accuracy", "", f"![clean vs Linf by architecture]({scatter})", ""]
    lines += ["## All configurations (accuracy %, 95% Wilson interval)", "", *_all(rows)]
    if failures is not None:
        lines += ["## Failed", "", *_failed(failures)]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
