"""The report's analyses against hand-computed numbers and the written report (the CSV import: test_import.py).

Borda on 2 datasets x 3 rows with a tie (ranks written out below); TRADES vs Classic AT on a set with 3 TRADES
wins, 1 Classic AT win and a tie (odds ratio 9, Fisher p worked out from the hypergeometric law); tier-1 odds
ratios on a set with known 2x2 counts; report.md and valid PNGs, also on partial results.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
from scipy.stats import fisher_exact

from rft_fast import report
from rft_fast.report import Row
from rft_fast.results import Measurement, Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESNET, DEIT_T = "resnet50.a1_in1k", "deit_tiny_patch16_224.fb_in1k"  # convolutional medium, attention small


def row(backbone: str, dataset: str, loss: str, protocol: str, accs: tuple | float, **kw) -> Row:
    """A Row from five accuracies (clean, Linf, L2, L1, common), or one value for all five."""
    values = accs if isinstance(accs, tuple) else (accs,) * 5
    return Row(backbone, dataset, loss, protocol, **dict(zip(report.ACCURACIES, values)), **kw)


# ---------------------------------------------------------------------------------------------------- Borda
# Rows A = (resnet, trades), B = (resnet, classic_at), C = (deit_t, trades); protocol FFT-50.
#            clean  Linf  L2    L1    common
# D1  A      0.8    0.3   0.4   0.2   0.5
#     B      0.7    0.3   0.5   0.1   0.6
#     C      0.9    0.2   0.3   0.3   0.4
# D2  A      0.6    0.25  0.35  0.15  0.45
#     B      0.65   0.3   0.3   0.2   0.5
#     C      0.5    0.1   0.2   0.1   0.3
BORDA_ROWS = [
    row(RESNET, "D1", "trades", "FFT-50", (0.8, 0.3, 0.4, 0.2, 0.5)),
    row(RESNET, "D1", "classic_at", "FFT-50", (0.7, 0.3, 0.5, 0.1, 0.6)),
    row(DEIT_T, "D1", "trades", "FFT-50", (0.9, 0.2, 0.3, 0.3, 0.4)),
    row(RESNET, "D2", "trades", "FFT-50", (0.6, 0.25, 0.35, 0.15, 0.45)),
    row(RESNET, "D2", "classic_at", "FFT-50", (0.65, 0.3, 0.3, 0.2, 0.5)),
    row(DEIT_T, "D2", "trades", "FFT-50", (0.5, 0.1, 0.2, 0.1, 0.3)),
    row(DEIT_T, "D1", "classic_at", "LP-50", 0.99),  # another protocol: never ranked with FFT-50
]


def test_borda_hand_computed():
    # Points = rankdata(method="min"): lowest accuracy 1, highest 3, ties share the minimum.
    # D1: clean B1 A2 C3 | Linf C1, A and B tie on 0.3 -> both 2 | L2 C1 A2 B3 | L1 B1 A2 C3 | common C1 A2 B3
    #     A = 2+2+2+2+2 = 10, B = 1+2+3+1+3 = 10, C = 3+1+1+3+1 = 9
    # D2: clean C1 A2 B3 | Linf C1 A2 B3 | L2 C1 B2 A3 | L1 C1 A2 B3 | common C1 A2 B3
    #     A = 2+2+3+2+2 = 11, B = 3+3+2+3+3 = 14, C = 1+1+1+1+1 = 5
    # Totals: B 24, A 21, C 14.
    ranking = report.borda(BORDA_ROWS, "FFT-50")
    assert [(e["backbone"], e["loss"]) for e in ranking] == [
        (RESNET, "classic_at"),
        (RESNET, "trades"),
        (DEIT_T, "trades"),
    ]
    assert [e["points"] for e in ranking] == [24, 21, 14]
    assert [e["points_by_dataset"] for e in ranking] == [{"D1": 10, "D2": 14}, {"D1": 10, "D2": 11}, {"D1": 9, "D2": 5}]
    assert [e["medal"] for e in ranking] == ["gold", "silver", "bronze"]
    assert [e["position"] for e in ranking] == [1, 2, 3]
    # score_sum: B 2.2 + 1.95, A 2.2 + 1.8, C 2.1 + 1.2
    assert [e["score_sum"] for e in ranking] == pytest.approx([4.15, 4.0, 3.3])
    # geom: B 0.7*0.3*0.5*0.1*0.6 + 0.65*0.3*0.3*0.2*0.5 = 0.0063 + 0.00585
    #       A 0.8*0.3*0.4*0.2*0.5 + 0.6*0.25*0.35*0.15*0.45 = 0.0096 + 0.00354375
    #       C 0.9*0.2*0.3*0.3*0.4 + 0.5*0.1*0.2*0.1*0.3 = 0.00648 + 0.0003
    assert [e["geom"] for e in ranking] == pytest.approx([0.01215, 0.01314375, 0.00678])
    assert [(e["arch"], e["size"]) for e in ranking] == [("convolutional", "medium")] * 2 + [("attention", "small")]
    assert [e["datasets"] for e in ranking] == [2, 2, 2] and [e["missing"] for e in ranking] == [0, 0, 0]
    lp = report.borda(BORDA_ROWS, "LP-50")
    assert [(e["points"], e["medal"]) for e in lp] == [(5, "gold")]  # alone: rank 1 on each of five


def test_borda_partial_results():
    # One dataset; B lacks Linf and C lacks everything but clean.
    #   clean: A 0.5, B 0.6, C 0.7 -> A1 B2 C3; Linf: only A has it -> A1 (B, C 0)
    #   L2 / L1 / common: A 0.1 / 0.1 / 0.1, B 0.2 / 0.2 / 0.2 -> A1 B2 each (C 0)
    #   A = 1+1+1+1+1 = 5, B = 2+0+2+2+2 = 8, C = 3
    rows = [
        row(RESNET, "D1", "trades", "FFT-5", (0.5, 0.1, 0.1, 0.1, 0.1)),
        row(RESNET, "D1", "classic_at", "FFT-5", (0.6, None, 0.2, 0.2, 0.2)),
        row(DEIT_T, "D1", "trades", "FFT-5", (0.7, None, None, None, None)),
    ]
    ranking = report.borda(rows, "FFT-5")
    assert [(e["loss"], e["points"], e["missing"]) for e in ranking] == [
        ("classic_at", 8, 1),
        ("trades", 5, 0),
        ("trades", 3, 4),
    ]
    assert [e["geom"] for e in ranking] == pytest.approx([0.0, 0.5 * 0.1**4, 0.0])  # incomplete: no product
    assert ranking[0]["score_sum"] == pytest.approx(1.2)


def test_borda_rejects_duplicate_configurations():
    with pytest.raises(ValueError, match="duplicate configuration"):
        report.borda(BORDA_ROWS[:1] * 2, "FFT-50")


# ---------------------------------------------------------------------------------------------------- TRADES vs Classic AT
SMALL = (
    "deit_tiny_patch16_224.fb_in1k",
    "regnetx_004.pycls_in1k",
    "edgenext_small.usi_in1k",
    "mobilenetv3_large_100.ra_in1k",
    "coat_tiny.in1k",
)


def test_trades_vs_classic_odds_ratio():
    rows = [
        row(SMALL[0], "D1", "trades", "FFT-50", 0.5),
        row(SMALL[0], "D1", "classic_at", "FFT-50", 0.4),  # T
        row(SMALL[1], "D1", "TRADES", "FFT-50", 0.3),
        row(SMALL[1], "D1", "Classic AT", "FFT-50", 0.2),  # T
        # T on the only shared accuracy (clean 0.7 > 0.6), although C's own sum is larger: T
        row(SMALL[2], "D1", "trades", "FFT-50", (0.7, 0.1, None, None, None)),
        row(SMALL[2], "D1", "classic_at", "FFT-50", (0.6, None, 0.9, 0.9, 0.9)),
        row(SMALL[3], "D1", "trades", "FFT-50", 0.2),
        row(SMALL[3], "D1", "classic_at", "FFT-50", 0.6),  # C
        row(SMALL[4], "D1", "trades", "FFT-50", (0.5, 0.2, 0.3, 0.1, 0.4)),  # tie: 1.5 against 1.5
        row(SMALL[4], "D1", "classic_at", "FFT-50", (0.4, 0.3, 0.2, 0.2, 0.4)),
        row(SMALL[0], "D2", "trades", "FFT-50", 0.9),  # no Classic AT partner: not counted
        row(SMALL[0], "D1", "ce", "FFT-50", 0.9),  # neither loss: not counted
        row(RESNET, "D1", "trades", "FFT-5", 0.1),
        row(RESNET, "D1", "classic_at", "FFT-5", 0.2),  # medium: C
    ]
    small, medium = report.trades_vs_classic(rows)
    assert (small["size"], small["protocol"]) == ("small", "FFT-50")
    assert (small["trades_wins"], small["classic_wins"], small["ties"]) == (3, 1, 1)
    assert small["odds_ratio"] == pytest.approx(3 * 3 / (1 * 1))
    # Table [[T, C], [C, T]] = [[3, 1], [1, 3]]: margins 4 / 4, N = 8. P(a = k) = C(4,k) C(4,4-k) / C(8,4):
    # k = 0..4 -> 1, 16, 36, 16, 1 over 70. Two-sided: every k no likelier than the observed k = 3: (1+16+16+1)/70.
    by_hand = sum(math.comb(4, k) * math.comb(4, 4 - k) for k in (0, 1, 3, 4)) / math.comb(8, 4)
    assert by_hand == pytest.approx(34 / 70)
    assert small["p_value"] == pytest.approx(by_hand)
    assert small["p_value"] == pytest.approx(fisher_exact([[3, 1], [1, 3]]).pvalue)
    assert (medium["size"], medium["protocol"], medium["trades_wins"], medium["classic_wins"]) == (
        "medium",
        "FFT-5",
        0,
        1,
    )
    assert medium["odds_ratio"] == 0.0 and medium["p_value"] == pytest.approx(1.0)


def test_trades_vs_classic_needs_both_losses():
    assert report.trades_vs_classic([row(RESNET, "D1", "trades", "FFT-50", 0.5)]) == []


# ---------------------------------------------------------------------------------------------------- tier 1
MEDIUM = {
    "resnet": "resnet50.a1_in1k",
    "convnext": "convnext_tiny.fb_in1k",
    "robust": "robust_resnet50",
    "vit": "vit_small_patch16_224.augreg_in1k",
    "deit": "deit_small_patch16_224.fb_in1k",
    "coatnet": "coatnet_0_rw_224.sw_in1k",
}  # conv, conv, conv, attention, attention, hybrid: all medium


def test_tier1_odds_known_tables():
    m = MEDIUM
    rows = [
        # D1: 6 complete rows -> tier 1 = top ceil(6/3) = 2: resnet (conv), vit (attention)
        *(
            row(m[k], "D1", "trades", "FFT-50", v)
            for k, v in (
                ("resnet", 0.9),
                ("vit", 0.8),
                ("convnext", 0.7),
                ("deit", 0.6),
                ("robust", 0.5),
                ("coatnet", 0.4),
            )
        ),
        row("robust_convnext_tiny", "D1", "trades", "FFT-50", (0.99, None, 0.99, 0.99, 0.99)),  # incomplete: out
        # D2: 3 rows -> ceil(3/3) = 1, but resnet and deit tie at the top: both in tier 1
        row(m["resnet"], "D2", "trades", "FFT-50", 0.5),
        row(m["deit"], "D2", "trades", "FFT-50", 0.5),
        row(m["coatnet"], "D2", "trades", "FFT-50", 0.2),
        # D3: 2 rows, no top third: left out
        row(m["resnet"], "D3", "trades", "FFT-50", 0.9),
        row(m["vit"], "D3", "trades", "FFT-50", 0.1),
    ]
    # Medium, 9 rows: conv in tier 1 {resnet D1, resnet D2}, not {convnext D1, robust D1};
    # attention in {vit D1, deit D2}, not {deit D1}; hybrid in {}, not {coatnet D1, coatnet D2}.
    found = {e["value"]: e for e in report.tier1_odds(rows, "arch")}
    assert list(found) == ["convolutional", "attention", "hybrid"]
    expected = {"convolutional": (2, 2, 2, 3), "attention": (2, 1, 2, 4), "hybrid": (0, 2, 4, 3)}
    for value, (a, b, c, d) in expected.items():
        e = found[value]
        assert (e["size"], e["feature"], e["a"], e["b"], e["c"], e["d"]) == ("medium", "arch", a, b, c, d)
        assert e["p_value"] == pytest.approx(fisher_exact([[a, b], [c, d]]).pvalue)
    assert found["convolutional"]["odds_ratio"] == pytest.approx(2 * 3 / (2 * 2))
    assert found["attention"]["odds_ratio"] == pytest.approx(2 * 4 / (1 * 2))
    assert found["hybrid"]["odds_ratio"] == 0.0
    (loss,) = report.tier1_odds(rows, "loss")  # one loss only: no "others" -> undefined
    assert (loss["a"], loss["b"], loss["c"], loss["d"], loss["odds_ratio"], loss["p_value"]) == (4, 5, 0, 0, None, None)
    with pytest.raises(ValueError, match="feature"):
        report.tier1_odds(rows, "colour")


# ---------------------------------------------------------------------------------------------------- rows, groups
def test_row_registry_lookup_and_group_means():
    assert (
        row("efficientnet-b0", "D1", "trades", "FFT-50", 0.5).arch,  # the study's alias
        row("efficientnet-b0", "D1", "trades", "FFT-50", 0.5).size,
    ) == ("convolutional", "small")
    other = row("someone_elses_net", "D1", "trades", "FFT-50", 0.5)
    assert (other.arch, other.size, other.pretraining) == ("unknown",) * 3
    with pytest.raises(ValueError, match="Linf"):
        row(RESNET, "D1", "trades", "FFT-50", (0.5, 1.5, 0.5, 0.5, 0.5))
    rows = [
        row(RESNET, "D1", "trades", "FFT-50", (0.8, 0.2, 0.4, 0.1, 0.5)),
        row(RESNET, "D2", "trades", "FFT-50", (0.6, None, 0.2, 0.3, 0.3)),
        row(DEIT_T, "D1", "trades", "FFT-50", 0.5),
    ]
    conv, attention = report.group_means(rows, "arch")
    assert (conv["arch"], conv["n"], attention["arch"], attention["n"]) == ("convolutional", 2, "attention", 1)
    assert (conv["clean"], conv["Linf"], conv["L2"]) == pytest.approx((0.7, 0.2, 0.3))  # Linf: the one measured
    assert [g["size"] for g in report.group_means(rows, "size")] == ["small", "medium"]


def test_rows_from_store_keeps_the_most_complete_duplicate(tmp_path: Path):
    def put(store: Store, run_id: str, threats: tuple[str, ...]) -> None:
        none = dict(eps=None, corruption=None, severity=None, mode="-")
        for t in threats:
            key = none if t == "clean" else dict(none, eps=4 / 255, mode="standard")
            store.put(
                Measurement(
                    run_id=run_id,
                    dataset="D1",
                    backbone=RESNET,
                    loss="trades",
                    protocol="FFT-50",
                    hparams={},
                    threat=t,
                    accuracy=0.5,
                    n=10,
                    seconds=0.0,
                    **key,
                )
            )

    with Store(tmp_path / "s.sqlite") as store:
        put(store, "a", ("clean",))
        put(store, "b", ("clean", "Linf"))
        with pytest.warns(UserWarning, match="1 duplicate"):
            (kept,) = report.rows_from_store(store)
    assert (kept.run_id, kept.clean, kept.Linf, kept.arch) == ("b", 0.5, 0.5, "convolutional")


# ---------------------------------------------------------------------------------------------------- write
def _pngs(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*.png"))
    assert found and all(p.read_bytes()[:8] == PNG_MAGIC for p in found)
    return found


def test_write_full_report(tmp_path: Path):
    path = report.write(BORDA_ROWS, tmp_path / "out", title="test report")
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert text.startswith("# test report")
    assert "7 configurations: 2 backbones, 2 datasets (D1, D2), 2 losses (classic_at, trades)" in text
    # The Borda table of FFT-50: gold B with 24 points, score_sum 4.150, geom 0.0122
    assert (
        f"| 1 | gold | {RESNET} | classic_at | convolutional | medium | supervised | 24 | 1 | 4.150 | 0.0122 | 2 | 0 |"
        in text
    )
    assert f"| 3 | bronze | {DEIT_T} | trades | attention | small | supervised | 14 | 3 | 3.300 |" in text
    # D1 rankings, clean and Linf leaders (A and B tie on Linf: listed by name, classic_at first)
    assert f"| 1 | {DEIT_T} (trades) 90.0 | {RESNET} (classic_at) 30.0 |" in text
    # resnet: D1 tie (2.2 each), D2 Classic AT (1.95 > 1.8) -> T 0, C 1: odds ratio 0, p 1
    assert "## TRADES vs Classic AT" in text and "| medium | FFT-50 | 0 | 1 | 1 | 0.00 | 1 |" in text
    assert "## Tier-1 odds ratios" in text
    names = [p.name for p in _pngs(tmp_path / "out")]
    assert names == ["borda_FFT-50.png", "borda_LP-50.png", "clean_vs_linf.png"]
    assert all(f"]({n})" in text for n in names)


def test_write_partial_results(tmp_path: Path):
    rows = [row(RESNET, "pets", "trades", "FFT-5", (0.8, None, 0.3, None, 0.6))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no empty-legend warning from matplotlib
        text = report.write(rows, tmp_path).read_text()
    assert "1 configuration: 1 backbone, 1 dataset (pets), 1 loss (trades), 1 protocol (FFT-5)" in text
    assert "0 of 1 have all five accuracies" in text
    assert f"| 1 | gold | {RESNET} | trades |" in text and "| 3 | 1 | 1.700 | 0.0000 | 1 | 2 |" in text
    assert text.count("Not enough data") == 1 + len(report.FEATURES)  # TRADES vs Classic AT, each tier-1 feature
    _pngs(tmp_path)
    with pytest.raises(ValueError, match="no results"):
        report.write([], tmp_path)


# ---------------------------------------------------------------------------------------------------- intervals, header
def test_wilson_known_values():
    z2 = 1.959964**2
    # p = 0.5, n = 16: centre (0.5 + z2/32) / (1 + z2/16) = 0.5, half z / (1 + z2/16) * sqrt(1/64 + z2/1024) = 0.220004
    low, high = report.wilson(0.5, 16)
    assert (low, high) == pytest.approx((0.279996, 0.720004), abs=1e-6)
    assert report.wilson(10 / 16, 16) == pytest.approx((0.386410, 0.815188), abs=1e-6)  # "62.5 [38.6, 81.5]"
    # Edge cases: the interval keeps its width at p = 0 and 1, [0, z2/(n+z2)] and [n/(n+z2), 1]
    assert report.wilson(0.0, 16) == pytest.approx((0.0, z2 / (16 + z2)))
    assert report.wilson(1.0, 16) == pytest.approx((16 / (16 + z2), 1.0))
    assert report.wilson(0.0, 16)[0] == 0.0 and report.wilson(1.0, 16)[1] == 1.0  # clamped, never -1e-17
    # scipy's Wilson interval (its own normal quantile) on a few counts
    from scipy.stats import binomtest

    for k, n in ((1, 3), (40, 64), (999, 1000)):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert report.wilson(k / n, n) == pytest.approx((ci.low, ci.high), abs=1e-7)
    assert report.wilson(0.5, None) is None and report.wilson(0.5, 0) is None  # no n: no interval
    with pytest.raises(ValueError, match="p: must be a proportion"):
        report.wilson(1.2, 10)
    with pytest.raises(ValueError, match="n: must be a count"):
        report.wilson(0.5, -3)


def test_row_n_eps_random_init_are_optional_and_checked():
    old = Row(RESNET, "D1", "trades", "FFT-50", 0.5, 0.2)  # positional, as existing callers build it
    assert (old.n, old.eps, old.random_init, old.Linf) == ({}, {}, None, 0.2)
    new = row(RESNET, "D1", "trades", "FFT-50", 0.5, n={"clean": 64}, eps={"Linf": 4 / 255}, random_init=True)
    assert (new.n, new.eps, new.random_init) == ({"clean": 64}, {"Linf": 4 / 255}, True)
    with pytest.raises(ValueError, match="n: keys"):
        row(RESNET, "D1", "trades", "FFT-50", 0.5, n={"accuracy": 64})
    with pytest.raises(ValueError, match="n: clean"):
        row(RESNET, "D1", "trades", "FFT-50", 0.5, n={"clean": 0})
    with pytest.raises(ValueError, match="eps: Linf"):
        row(RESNET, "D1", "trades", "FFT-50", 0.5, eps={"Linf": -1.0})


def _measure(
    run_id: str, threat: str, accuracy: float, n: int, hparams: dict, mode: str = "fast", backbone: str = RESNET
) -> Measurement:
    key = dict(eps=None, corruption=None, severity=None, mode="-")
    if threat in ("Linf", "L2", "L1"):
        key.update(eps={"Linf": 4 / 255, "L2": 2.0, "L1": 75.0}[threat], mode=mode)
    elif threat == "corruption":
        key.update(corruption="study", severity=3)
    return Measurement(
        run_id=run_id,
        dataset="digits",
        backbone=backbone,
        loss="trades",
        protocol="FFT-5",
        hparams=hparams,
        threat=threat,
        accuracy=accuracy,
        n=n,
        seconds=0.0,
        **key,
    )


def test_rows_from_store_carries_n_eps_and_random_init(tmp_path: Path):
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(
            [
                _measure("a", "clean", 0.5, 64, {"random_init": True}),
                _measure("a", "Linf", 0.25, 32, {"random_init": True}),
                _measure("a", "L1", 0.1, 32, {"random_init": True}, mode="standard"),  # other mode: not here
                _measure("a", "corruption", 0.4, 48, {"random_init": True}),
                _measure("b", "clean", 0.7, 100, {}, backbone=DEIT_T),
            ]
        )
        rows = {r.run_id: r for r in report.rows_from_store(store, mode="fast")}
    a, b = rows["a"], rows["b"]
    assert a.n == {"clean": 64, "Linf": 32, "common": 48} and a.eps == {"Linf": pytest.approx(4 / 255)}
    assert a.random_init is True and a.L1 is None
    assert (b.n, b.eps, b.random_init) == ({"clean": 100}, {}, None)  # no random_init in hparams: not recorded


HEADER_ROWS = [
    row(
        RESNET,
        "digits",
        "trades",
        "FFT-5",
        (0.625, 0.25, 0.3, 0.1, 0.5),
        random_init=True,
        n={"clean": 16, "Linf": 16, "L2": 16, "L1": 16, "common": 64},
        eps={"Linf": 4 / 255, "L2": 2.0, "L1": 75.0},
    ),
    row(
        DEIT_T,
        "digits",
        "trades",
        "FFT-5",
        (0.5, 0.2, None, None, None),
        random_init=False,
        n={"clean": 32},
        eps={"Linf": 4 / 255},
    ),
]


def test_write_header_states_mode_threats_n_intervals_and_init(tmp_path: Path):
    text = report.write(HEADER_ROWS, tmp_path, mode="fast").read_text()
    header = text.split("## Borda count")[0]
    assert "- Attack mode: **fast**, AutoAttack's APGD-CE + APGD-T only, without FAB-T and Square" in header
    assert (
        "- Threat models: clean (no attack); Linf eps 4/255 = 0.0157; L2 eps 2; L1 eps 75; common: corruption "
        "'study' (the study's 11 types) at severity 3."
    ) in header
    # deit's Linf has no n: "unknown for 1"; L2 / L1 / common only on resnet
    assert "- Test images per accuracy (n): clean 16–32; Linf 16 (unknown for 1); L2 16; L1 16; common 64." in header
    assert "95% Wilson score interval" in header and "At the smallest n (16) the interval around 50% is ±22.0" in header
    assert "**Randomly initialized: 1 of 2 configurations' models were trained from random weights" in header
    # Intervals beside the accuracies: 62.5 of 16 -> [38.6, 81.5]; 50.0 of 32 -> [33.6, 66.4]; deit Linf without n
    assert f"| 1 | {RESNET} (trades) 62.5 [38.6, 81.5] | {RESNET} (trades) 25.0 [10.2, 49.5] |" in text
    assert f"| 2 | {DEIT_T} (trades) 50.0 [33.6, 66.4] | {DEIT_T} (trades) 20.0 |" in text
    assert (f"| FFT-5 | digits | {DEIT_T} | trades | pretrained | 50.0 [33.6, 66.4] | 20.0 | – | – | – |") in text
    assert f"| FFT-5 | digits | {RESNET} | trades | random | 62.5 [38.6, 81.5] |" in text
    assert "## Failed" not in text  # no failures given: no section
    assert report.wilson(0.5, 32) == pytest.approx((0.336, 0.664), abs=5e-4)
    assert report.wilson(0.25, 16) == pytest.approx((0.102, 0.495), abs=5e-4)


def test_write_header_all_random_several_eps_and_unrecorded(tmp_path: Path):
    rows = [
        row(RESNET, "D1", "trades", "FFT-5", 0.5, random_init=True, eps={"Linf": 4 / 255}),
        row(DEIT_T, "D1", "trades", "FFT-5", 0.5, random_init=True, eps={"Linf": 8 / 255}),
    ]
    header = report.write(rows, tmp_path, mode="standard").read_text().split("## Borda count")[0]
    assert "- Attack mode: **standard**, AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square)." in header
    assert (
        "Linf eps 4/255 = 0.0157 (1 configuration), 8/255 = 0.0314 (1 configuration) (**several radii: these "
        "accuracies are not comparable across them**)"
    ) in header
    assert "L2 (eps not recorded)" in header and "- Test images per accuracy (n): clean unknown;" in header
    assert "**Randomly initialized: all configurations' models" in header
    assert "At the smallest n" not in header  # no n anywhere
    unrecorded = report.write([row(RESNET, "D1", "trades", "FFT-5", 0.5)], tmp_path).read_text()
    assert "- Attack mode: not stated." in unrecorded
    assert "- Initialization not recorded for 1 configuration (no random_init in their hparams" in unrecorded
    assert "Randomly initialized" not in unrecorded
    pretrained = report.write([row(RESNET, "D1", "trades", "FFT-5", 0.5, random_init=False)], tmp_path).read_text()
    assert "- Initialization: every model was fine-tuned from pretrained weights" in pretrained


def test_write_failed_section(tmp_path: Path):
    from rft_fast.results import Stage

    failures = [
        Stage(f"{DEIT_T}|trades|FFT-5|digits", "L1", "failed", "RuntimeError: CUDA out of\nmemory"),
        Stage(f"{RESNET}|trades|FFT-5|digits", "tune", "failed", "no trial reported a finite metric"),
        Stage(f"{RESNET}|trades|FFT-5|digits", "L2", "done"),
    ]  # done: not a failure
    text = report.write(HEADER_ROWS, tmp_path, failures=failures).read_text()
    failed = text.split("## Failed")[1]
    assert "2 stages of the grid failed" in failed
    assert f"| {DEIT_T}\\|trades\\|FFT-5\\|digits | L1 | RuntimeError: CUDA out of memory |" in failed  # one line
    assert f"| {RESNET}\\|trades\\|FFT-5\\|digits | tune | no trial reported a finite metric |" in failed
    assert "| L2 |" not in failed
    assert "## Failed\n\nNo failed stages." in report.write(HEADER_ROWS, tmp_path, failures=[]).read_text()
