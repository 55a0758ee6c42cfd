"""The study's analyses (docs/study.md "Analyses"; exact definitions in docs/report.md) on Rows, each defined so it also works on partial results.

Missing accuracies: Borda ranks only the rows that have a value (a row without it gets 0 points for it);
TRADES vs Classic AT compares a pair on the accuracies both rows have; tier 1 ranks only complete rows.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from scipy.stats import fisher_exact, rankdata

from rft_fast.models.registry import ARCHS, PRETRAININGS, SIZES
from rft_fast.report.rows import ACCURACIES, Row, check_unique

MEDALS = ("gold", "silver", "bronze")
FEATURES = ("arch", "pretraining", "loss", "protocol")
GROUPINGS = ("arch", "size", "pretraining", "loss", "protocol", "dataset")
TIE_TOLERANCE = 1e-9  # score sums closer than this are a tie (sums of floats carry rounding noise)
PROTOCOLS = ("FFT-50", "FFT-5", "LP-50")  # the study's, in its order
_ORDER = {"arch": ARCHS, "size": SIZES, "pretraining": PRETRAININGS, "protocol": PROTOCOLS}


def ordered(field: str, values: set[str]) -> list[str]:
    """`values` in the registry's order for arch / size / pretraining, the study's for protocols; others (e.g.
    "unknown") after them, alphabetical."""
    known = _ORDER.get(field, ())
    return [v for v in known if v in values] + sorted(v for v in values if v not in known)


def _fisher(table: list[list[int]]) -> tuple[float | None, float | None]:
    """(odds ratio, two-sided p) of a 2x2 table; (None, None) when a row or column is empty (undefined)."""
    (a, b), (c, d) = table
    if 0 in (a + b, c + d, a + c, b + d):
        return None, None
    result = fisher_exact(table)
    return float(result.statistic), float(result.pvalue)


def borda(rows: Sequence[Row], protocol: str) -> list[dict[str, Any]]:
    """Borda count of the (backbone, loss) rows of `protocol`, best first.

    Per dataset and accuracy, the rows with a value get rank points scipy.stats.rankdata(method="min") (lowest
    accuracy 1 point, highest n; ties share the minimum); a missing value earns 0. Points sum over the five
    accuracies and the datasets. Order: points, then score_sum, then names; `position` is the place in that
    order and the first three get the `medal`s. `rank` is the global rank as the paper gives it (GR): 1 + the
    entries with more points, so equal points share it. `size_medal` is the medal within the entry's size class
    (its first three in this order, the paper's per-size tables; "unknown" sizes ranked among themselves).
    score_sum adds the measured accuracies over datasets; geom adds the product of the five over the datasets
    where all five are measured; `missing` counts the accuracies not measured.
    """
    chosen = [r for r in rows if r.protocol == protocol]
    check_unique(chosen)
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for r in chosen:
        entry = table.setdefault(
            (r.backbone, r.loss),
            {
                "backbone": r.backbone,
                "loss": r.loss,
                "arch": r.arch,
                "size": r.size,
                "pretraining": r.pretraining,
                "points": 0,
                "points_by_dataset": {},
                "score_sum": 0.0,
                "geom": 0.0,
                "datasets": 0,
                "missing": 0,
            },
        )
        entry["score_sum"] += r.score_sum
        entry["geom"] += r.geom or 0.0
        entry["datasets"] += 1
        entry["missing"] += len(ACCURACIES) - len(r.present())
        entry["points_by_dataset"][r.dataset] = 0
    for dataset in {r.dataset for r in chosen}:
        group = [r for r in chosen if r.dataset == dataset]
        for accuracy in ACCURACIES:
            have = [r for r in group if getattr(r, accuracy) is not None]
            if not have:
                continue
            for r, points in zip(have, rankdata([getattr(r, accuracy) for r in have], method="min")):
                entry = table[(r.backbone, r.loss)]
                entry["points"] += int(points)
                entry["points_by_dataset"][dataset] += int(points)
    ranked = sorted(table.values(), key=lambda e: (-e["points"], -e["score_sum"], e["backbone"], e["loss"]))
    shared = rankdata([-e["points"] for e in ranked], method="min") if ranked else []
    in_size: dict[str, int] = defaultdict(int)
    for position, (entry, rank) in enumerate(zip(ranked, shared), 1):
        entry["position"] = position
        entry["rank"] = int(rank)
        entry["medal"] = _medal(position)
        in_size[entry["size"]] += 1
        entry["size_medal"] = _medal(in_size[entry["size"]])
    return ranked


def _medal(place: int) -> str:
    return MEDALS[place - 1] if place <= len(MEDALS) else ""


def size_medals(ranking: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-size medal table of a `borda` ranking, as the paper prints it: one {"size", "gold", "silver",
    "bronze"} per size class present (registry order, "unknown" last), each medal the ranking's entry (with its
    shared global `rank`) or None where the class has fewer than three entries."""
    table = {size: dict.fromkeys(MEDALS) for size in ordered("size", {e["size"] for e in ranking})}
    for entry in ranking:
        if entry["size_medal"]:
            table[entry["size"]][entry["size_medal"]] = entry
    return [{"size": size, **medals} for size, medals in table.items()]


def loss_kind(loss: str) -> str | None:
    """ "trades" or "classic_at" for the spellings of the two losses ("TRADES", "Classic AT", "classic_at"), else None."""
    folded = re.sub(r"[^a-z]", "", loss.lower())
    return {"trades": "trades", "classicat": "classic_at", "classic": "classic_at"}.get(folded)


def trades_vs_classic(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per size class and protocol: for each backbone and dataset measured with both losses, which loss has the
    higher score_sum over the accuracies both rows have (ties, within TIE_TOLERANCE, counted apart); then the odds
    ratio T*T/(C*C) and the two-sided p of Fisher's exact test on [[T, C], [C, T]] (None without any win)."""
    check_unique(rows)
    pairs: dict[tuple[str, str, str, str], dict[str, Row]] = defaultdict(dict)
    for r in rows:
        kind = loss_kind(r.loss)
        if kind:
            pairs[(r.size, r.protocol, r.backbone, r.dataset)][kind] = r
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for (size, protocol, _, _), pair in pairs.items():
        if len(pair) < 2:
            continue
        t, c = pair["trades"].present(), pair["classic_at"].present()
        shared = t.keys() & c.keys()
        if not shared:
            continue
        diff = sum(t[a] for a in shared) - sum(c[a] for a in shared)
        counts[(size, protocol)][0 if diff > TIE_TOLERANCE else 1 if diff < -TIE_TOLERANCE else 2] += 1
    out = []
    for size in ordered("size", {s for s, _ in counts}):
        for protocol in sorted(p for s, p in counts if s == size):
            t, c, ties = counts[(size, protocol)]
            odds, p = _fisher([[t, c], [c, t]])
            out.append(
                {
                    "size": size,
                    "protocol": protocol,
                    "trades_wins": t,
                    "classic_wins": c,
                    "ties": ties,
                    "odds_ratio": odds,
                    "p_value": p,
                }
            )
    return out


def tier1(rows: Sequence[Row]) -> list[tuple[Row, bool]]:
    """Each complete row with whether it is in tier 1: the top third (ceil(n/3)) by score_sum among the n complete
    rows of its size class and dataset (datasets differ in difficulty, so rows compete within one; losses and
    protocols compete together, so both can be features). Rows tied at the cut are all in; groups of fewer than
    3 rows have no top third and are left out."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r.complete:
            groups[(r.size, r.dataset)].append(r)
    out = []
    for group in groups.values():
        if len(group) < 3:
            continue
        ranks = rankdata([-r.score_sum for r in group], method="min")
        out += [(r, bool(k <= math.ceil(len(group) / 3))) for r, k in zip(group, ranks)]
    return out


def tier1_odds(rows: Sequence[Row], feature: str) -> list[dict[str, Any]]:
    """Per size class and value of `feature` (arch, pretraining, loss, protocol): the 2x2 table of rows with the
    value in tier 1 (a) / not (b) against the other rows in tier 1 (c) / not (d), its odds ratio a*d/(b*c) and
    Fisher's two-sided p (None where the table has an empty row or column: e.g. one value only)."""
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    check_unique(rows)
    tiered = tier1(rows)
    out = []
    for size in ordered("size", {r.size for r, _ in tiered}):
        members = [(getattr(r, feature), top) for r, top in tiered if r.size == size]
        for value in ordered(feature, {v for v, _ in members}):
            a = sum(v == value and top for v, top in members)
            b = sum(v == value and not top for v, top in members)
            c = sum(v != value and top for v, top in members)
            d = sum(v != value and not top for v, top in members)
            odds, p = _fisher([[a, b], [c, d]])
            out.append(
                {
                    "size": size,
                    "feature": feature,
                    "value": value,
                    "a": a,
                    "b": b,
                    "c": c,
                    "d": d,
                    "odds_ratio": odds,
                    "p_value": p,
                }
            )
    return out


def group_means(rows: Sequence[Row], by: str) -> list[dict[str, Any]]:
    """Per value of `by`: the number of configurations and the mean of each accuracy over the rows that have it
    (None where none has)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, got {by!r}")
    out = []
    for value in ordered(by, {getattr(r, by) for r in rows}):
        group = [r for r in rows if getattr(r, by) == value]
        entry: dict[str, Any] = {by: value, "n": len(group)}
        for accuracy in ACCURACIES:
            values = [getattr(r, accuracy) for r in group if getattr(r, accuracy) is not None]
            entry[accuracy] = sum(values) / len(values) if values else None
        out.append(entry)
    return out
