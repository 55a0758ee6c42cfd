"""Summaries of the store: the study's wide rows, one per model (and test-subset size), with clean, Linf, L2, L1
and common-corruption accuracy side by side (`rft-fast results --wide`, the report)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rft_fast.results.measurement import MODEL_FIELDS
from rft_fast.results.schema import encode
from rft_fast.results.store import Store
from rft_fast.results.threats import ATTACKS, MODES, STUDY_CORRUPTION, STUDY_SEVERITY


def summary(
    store: Store, mode: str = "standard", eps: Mapping[str, float] | None = None, *, by_n: bool = True, **filters: Any
) -> list[dict[str, Any]]:
    """One wide row per model and test-subset size n: clean, Linf, L2, L1 (attack rows of `mode` only:
    standard and fast are never mixed), common (corruption 'study' at severity 3) and the eps of each attack
    column; None where missing. Accuracies measured on different n are never put on one row, unless
    by_n=False (the report, which carries each accuracy's own n): then one row per model, "n" None.
    smoothing-L2 rows are not among these columns and never enter it (query(threat="smoothing-L2") lists them).

    A model measured at several eps of one threat is ambiguous: pass `eps={'Linf': 8/255, ...}` to pick,
    else ValueError. `filters` restrict the models (run_id, dataset, backbone, loss, protocol, hparams).
    """
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
    unknown = sorted(set(eps or {}) - set(ATTACKS))
    if unknown:
        raise ValueError(f"eps: keys must be among {ATTACKS}, got {unknown}")
    where, args = store.where(filters, MODEL_FIELDS)
    where += (
        " AND (threat = 'clean' OR (threat = 'corruption' AND corruption = ? AND severity = ?)"
        f" OR (threat IN {ATTACKS} AND mode = ?" + " AND (threat != ? OR eps = ?)" * len(eps or {}) + "))"
    )
    args += [STUDY_CORRUPTION, STUDY_SEVERITY, mode] + [v for t, e in (eps or {}).items() for v in (t, e)]
    rows: dict[tuple, dict[str, Any]] = {}
    for m in store.select(where, args):
        group = (*(encode(f, getattr(m, f)) for f in MODEL_FIELDS), m.n if by_n else None)
        row = rows.setdefault(
            group,
            {
                **{f: getattr(m, f) for f in MODEL_FIELDS},
                "n": group[-1],
                "mode": mode,
                "clean": None,
                **{k: None for t in ATTACKS for k in (t, f"{t}_eps")},
                "common": None,
            },
        )
        if m.threat in ATTACKS:
            if row[f"{m.threat}_eps"] is not None:
                raise ValueError(
                    f"{m.threat}: {dict(zip(MODEL_FIELDS, group))} has several eps ("
                    f"{row[f'{m.threat}_eps']}, {m.eps}); pick one with eps={{{m.threat!r}: ...}}"
                )
            row[f"{m.threat}_eps"] = m.eps
        row["common" if m.threat == "corruption" else m.threat] = m.accuracy
    return list(rows.values())
