"""The paper's per-size Borda medals with its shared global rank (GR), against a hand computation; the size class
of a backbone the registry cannot size taken from an imported table's provenance.

Six (backbone, trades) entries of FFT-50 on two datasets, each row one accuracy for all five (so a row earns 5 x
its rank on a dataset): four small, two medium, with a tie in points across size classes and one within a class.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rft_fast import report
from rft_fast.report import Row
from rft_fast.results import Measurement, Store

S1, S2, S3, S4 = (
    "deit_tiny_patch16_224.fb_in1k",
    "regnetx_004.pycls_in1k",
    "edgenext_small.usi_in1k",
    "mobilenetv3_large_100.ra_in1k",
)  # small
M1, M2 = "resnet50.a1_in1k", "convnext_tiny.fb_in1k"  # medium
UNSIZED = "someone_elses_net"  # neither the registry nor timm knows it

# Rank on each dataset (1 = lowest accuracy) and the accuracy that rank stands for:
#   D1 rank 1..6 -> 0.1 0.2 0.3 0.4 0.5 0.9 ; D2 rank 1..6 -> 0.1 0.2 0.35 0.4 0.6 0.9
#          D1  D2  points = 5 (D1 + D2)   score_sum = 5 (v1 + v2)
#   M1     6   6   60                     5 (0.9 + 0.9)  = 9.0
#   M2     4   5   45                     5 (0.4 + 0.6)  = 5.0
#   S1     5   4   45                     5 (0.5 + 0.4)  = 4.5    tied with M2: after it by score_sum, same GR
#   S3     2   3   25                     5 (0.2 + 0.35) = 2.75
#   S2     3   2   25                     5 (0.3 + 0.2)  = 2.5    tied with S3 (same class): after it
#   S4     1   1   10                     5 (0.1 + 0.1)  = 1.0
# Positions 1..6: M1 M2 S1 S3 S2 S4. GR = 1 + entries with more points: 1 2 2 4 4 6.
# Overall medals: M1 M2 S1. Small: gold S1 (GR 2), silver S3 (GR 4), bronze S2 (GR 4), S4 none.
# Medium: gold M1 (GR 1), silver M2 (GR 2), no bronze.
D1 = {M1: 0.9, M2: 0.4, S1: 0.5, S3: 0.2, S2: 0.3, S4: 0.1}
D2 = {M1: 0.9, M2: 0.6, S1: 0.4, S3: 0.35, S2: 0.2, S4: 0.1}
ROWS = [
    Row(backbone, dataset, "trades", "FFT-50", *(value,) * 5)
    for dataset, table in (("D1", D1), ("D2", D2))
    for backbone, value in table.items()
]


def test_borda_shared_rank_and_size_medals_by_hand():
    ranking = report.borda(ROWS, "FFT-50")
    assert [e["backbone"] for e in ranking] == [M1, M2, S1, S3, S2, S4]
    assert [e["points"] for e in ranking] == [60, 45, 45, 25, 25, 10]
    assert [e["score_sum"] for e in ranking] == pytest.approx([9.0, 5.0, 4.5, 2.75, 2.5, 1.0])
    assert [e["position"] for e in ranking] == [1, 2, 3, 4, 5, 6]
    assert [e["rank"] for e in ranking] == [1, 2, 2, 4, 4, 6]
    assert [e["medal"] for e in ranking] == ["gold", "silver", "bronze", "", "", ""]
    assert [e["size_medal"] for e in ranking] == ["gold", "silver", "gold", "silver", "bronze", ""]
    small, medium = report.size_medals(ranking)
    assert small["size"] == "small" and medium["size"] == "medium"
    assert [(small[m]["backbone"], small[m]["rank"]) for m in ("gold", "silver", "bronze")] == [
        (S1, 2),
        (S3, 4),
        (S2, 4),
    ]
    assert (medium["gold"]["backbone"], medium["gold"]["rank"]) == (M1, 1)
    assert (medium["silver"]["backbone"], medium["silver"]["rank"]) == (M2, 2)
    assert medium["bronze"] is None
    assert report.size_medals([]) == []


def test_report_prints_the_size_medal_table(tmp_path: Path):
    text = report.write(ROWS, tmp_path).read_text()
    medals = text.split("Medals per size class, FFT-50")[1]
    assert "| size | gold | silver | bronze |" in medals
    assert (
        f"| small | {S1}, trades (GR 2, 45 points) | {S3}, trades (GR 4, 25 points) | {S2}, trades (GR 4, 25 points) |"
        in medals
    )
    assert f"| medium | {M1}, trades (GR 1, 60 points) | {M2}, trades (GR 2, 45 points) | – |" in medals
    assert medals.index("| small |") < medals.index("| medium |")  # the registry's order of size classes
    # The overall table keeps its place (#) and medals and shows the shared GR beside the points
    assert f"| 3 | bronze | {S1} | trades | attention | small | supervised | 45 | 2 | 4.500 |" in text
    assert f"| 5 |  | {S2} | trades | convolutional | small | supervised | 25 | 4 | 2.500 |" in text


def _put(store: Store, backbone: str, accuracy: float, provenance: dict | None) -> None:
    versions = {"layout": "paper", "provenance": provenance} if provenance is not None else {}
    store.put(
        Measurement(
            run_id=f"import:{backbone}",
            dataset="D1",
            backbone=backbone,
            loss="trades",
            protocol="FFT-50",
            hparams={},
            threat="clean",
            eps=None,
            corruption=None,
            severity=None,
            mode="-",
            accuracy=accuracy,
            n=10,
            seconds=0.0,
            versions=versions,
        )
    )


def test_rows_from_store_sizes_unregistered_backbones_from_the_imported_provenance(tmp_path: Path):
    with Store(tmp_path / "s.sqlite") as store:
        _put(store, UNSIZED, 0.9, {"model_size": "large", "backbone_name": "theirs"})  # sized by the import
        _put(store, "another_unknown_net", 0.8, {"model_size": "huge"})  # not a size class: stays unknown
        _put(store, "third_unknown_net", 0.7, None)  # nothing said: unknown
        _put(store, M1, 0.6, {"model_size": "large"})  # the registry knows it: its class (medium) wins
        with pytest.warns(UserWarning, match="another_unknown_net 'huge'"):
            rows = {r.backbone: r for r in report.rows_from_store(store)}
    sizes = {b: r.size for b, r in rows.items()}
    assert sizes == {UNSIZED: "large", "another_unknown_net": "unknown", "third_unknown_net": "unknown", M1: "medium"}
    assert rows[UNSIZED].arch == "unknown"  # only the size is taken from the import
    table = report.size_medals(report.borda(list(rows.values()), "FFT-50"))
    assert [t["size"] for t in table] == ["medium", "large", "unknown"]  # "unknown" last, ranked among itself
    unknown = table[2]
    assert (unknown["gold"]["backbone"], unknown["gold"]["rank"]) == ("another_unknown_net", 2)
    assert (unknown["silver"]["backbone"], unknown["silver"]["rank"], unknown["bronze"]) == (
        "third_unknown_net",
        3,
        None,
    )
