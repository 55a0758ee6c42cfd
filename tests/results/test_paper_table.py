"""The paper's published results table (results_dataset.csv, rft_fast.results.paper_table) imports as it is: its
header and cell spellings (here on a few rows of invented numbers), its names mapped to ours, its metadata kept
as provenance, the report's Borda medals on it as computed by hand, and a header of no known layout refused
with the columns each layout expects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rft_fast import cli, report
from rft_fast.data.registry import DATASETS
from rft_fast.models.registry import REGISTRY
from rft_fast.report.analyses import borda
from rft_fast.results import Store, importing
from rft_fast.results.importing import import_csv, read_csv
from rft_fast.results.paper_table import PAPER, PAPER_DATASETS

# the real file's header, byte for byte (pandas' unnamed index column first)
HEADER = (
    ",clean_acc,Linf_acc,L2_acc,L1_acc,common_acc,sum,geom,model_size,backbone,dataset,loss_function,"
    "pre_training_dataset,pre_training_strategy,volume_pre_training_data,backbone_name,model_type,ft_strategy"
)
# every backbone spelling the real file uses (its 40 backbones)
PAPER_BACKBONES = (
    "CLIP-convnext_base_w-laion_aesthetic-s13B-b82K",
    "CLIP-convnext_base_w-laion2B-s13B-b82K",
    "deit_small_patch16_224.fb_in1k",
    "robust_resnet50",
    "vit_small_patch16_224.augreg_in21k",
    "convnext_base.fb_in1k",
    "resnet50.a1_in1k",
    "robust_vit_base_patch16_224",
    "vit_base_patch16_224.mae",
    "vit_small_patch16_224.dino",
    "convnext_base.fb_in22k",
    "robust_convnext_base",
    "vit_base_patch16_224.augreg_in1k",
    "vit_base_patch16_224.augreg_in21k",
    "vit_base_patch16_clip_224.laion2b",
    "convnext_tiny.fb_in1k",
    "robust_convnext_tiny",
    "robust_deit_small_patch16_224",
    "vit_small_patch16_224.augreg_in1k",
    "convnext_tiny.fb_in22k",
    "vit_base_patch16_clip_224.laion2b_ft_in1k",
    "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "eva02_base_patch14_224.mim_in22k",
    "eva02_tiny_patch14_224.mim_in22k",
    "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
    "swin_tiny_patch4_window7_224.ms_in1k",
    "convnext_base.clip_laion2b_augreg_ft_in12k_in1k",
    "convnext_base.fb_in22k_ft_in1k",
    "convnext_tiny.fb_in22k_ft_in1k",
    "coatnet_0_rw_224.sw_in1k",
    "coatnet_2_rw_224.sw_in12k_ft_in1k",
    "coatnet_2_rw_224.sw_in12k",
    "regnetx_004.pycls_in1k",
    "efficientnet-b0",
    "deit_tiny_patch16_224.fb_in1k",
    "mobilevit-small",
    "mobilenetv3_large_100.ra_in1k",
    "edgenext_small.usi_in1k",
    "coat_tiny.in1k",
)
# the spellings that are not our registered names, and what they are
RENAMED = {
    "CLIP-convnext_base_w-laion_aesthetic-s13B-b82K": "clip_convnext_base_w.laion_aesthetic_s13b_b82k",
    "CLIP-convnext_base_w-laion2B-s13B-b82K": "clip_convnext_base_w.laion2b_s13b_b82k",
    "efficientnet-b0": "efficientnet_b0.ra_in1k",
    "mobilevit-small": "mobilevit_s.cvnets_in1k",
}
META = {  # the real file's metadata cells of the backbones used below (model_size .. backbone_name, model_type)
    "CLIP-convnext_base_w-laion2B-s13B-b82K": (
        "large",
        "laion2B",
        "self-supervised (multimodal)",
        "2320000000",
        "convnext_b,clip,laion2b",
        "fully convolutional",
    ),
    "resnet50.a1_in1k": ("medium", "in1k", "supervised", "1281167", "resnet50,sup,in1k", "fully convolutional"),
    "efficientnet-b0": ("small", "in1k", "supervised", "1281167", "efficientnet_b0,sup,in1k", "fully convolutional"),
    "mobilevit-small": ("small", "in1k", "supervised", "1281167", "mobilevit_s,sup,in1k", "hybrid"),
    "convnext_tiny.fb_in1k": ("medium", "in1k", "supervised", "1281167", "convnext_t,sup,in1k", "fully convolutional"),
    "deit_tiny_patch16_224.fb_in1k": ("small", "in1k", "supervised", "1281167", "deit_t,sup,in1k", "fully attention"),
}


def paper_row(index: int, backbone: str, dataset: str, loss: str, strategy: str, accs: tuple[float, ...]) -> str:
    """One row as pandas wrote the real file: index, five accuracies, sum, geom, metadata (backbone_name quoted)."""
    size, pre_data, pre_strategy, volume, name, kind = META[backbone]
    geom = accs[0] * accs[1] * accs[2] * accs[3] * accs[4]
    cells = [str(index), *map(repr, accs), repr(sum(accs)), repr(geom), size, backbone, dataset, loss]
    cells += [pre_data, pre_strategy, volume, f'"{name}"', kind, strategy]
    return ",".join(cells)


def write(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "results_dataset.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- names
def test_every_spelling_of_the_paper_maps_to_a_registered_name():
    names = importing._Names()
    for spelling in PAPER_BACKBONES:
        ours = names("backbone", spelling, PAPER)
        assert ours in REGISTRY and ours == RENAMED.get(spelling, spelling), spelling
    assert len({names("backbone", b, PAPER) for b in PAPER_BACKBONES}) == 40
    assert sorted(names("dataset", d, PAPER) for d in PAPER_DATASETS) == sorted(
        n for n in DATASETS if not DATASETS[n].builtin
    )
    assert [names("protocol", p, PAPER) for p in ("FFT (50 epochs)", "FFT (5 epochs)", "LP (50 epochs)")] == [
        "FFT-50",
        "FFT-5",
        "LP-50",
    ]
    assert [names("loss", x, PAPER) for x in ("Classic AT", "TRADES", "TRADES_v2", "CLASSIC_AT")] == [
        "classic_at",
        "trades",
        "trades",
        "classic_at",
    ]


# ---------------------------------------------------------------------------------------------------- import
ROWS = [
    paper_row(0, "CLIP-convnext_base_w-laion2B-s13B-b82K", "uc-merced-land-use-dataset", "TRADES", "FFT (50 epochs)",
              (0.9523809523809523, 0.8, 0.888095238095238, 0.7492063492063492, 0.8476190476190476)),
    paper_row(1, "resnet50.a1_in1k", "fgvc-aircraft-2013b", "Classic AT", "FFT (5 epochs)",
              (0.412, 0.101, 0.2, 0.05, 0.3)),
    paper_row(2, "efficientnet-b0", "oxford-iiit-pet", "Classic AT", "LP (50 epochs)",
              (0.7, 0.0, 0.0, 0.09966666666666667, 0.5)),
    paper_row(3, "mobilevit-small", "flowers-102", "TRADES", "FFT (50 epochs)", (0.8, 0.3, 0.4, 0.2, 0.6)),
    paper_row(4, "convnext_tiny.fb_in1k", "stanford_cars", "TRADES", "FFT (5 epochs)", (0.5, 0.2, 0.3, 0.1, 0.4)),
    paper_row(5, "deit_tiny_patch16_224.fb_in1k", "caltech101", "Classic AT", "LP (50 epochs)",
              (0.6, 0.25, 0.35, 0.15, 0.45)),
]  # fmt: skip


def test_the_paper_layout_imports_with_our_names(tmp_path: Path):
    path = write(tmp_path, ROWS)
    with Store(tmp_path / "s.sqlite") as store:
        assert import_csv(path, store) == 30
        clean = {(m.backbone, m.dataset, m.loss, m.protocol): m for m in store.query(threat="clean")}
        rows = {r.key: r for r in report.rows_from_store(store)}
    assert set(clean) == {
        ("clip_convnext_base_w.laion2b_s13b_b82k", "uc_merced", "trades", "FFT-50"),
        ("resnet50.a1_in1k", "fgvc_aircraft", "classic_at", "FFT-5"),
        ("efficientnet_b0.ra_in1k", "oxford_pets", "classic_at", "LP-50"),
        ("mobilevit_s.cvnets_in1k", "flowers102", "trades", "FFT-50"),
        ("convnext_tiny.fb_in1k", "stanford_cars", "trades", "FFT-5"),
        ("deit_tiny_patch16_224.fb_in1k", "caltech101", "classic_at", "LP-50"),
    }
    clip = rows[("clip_convnext_base_w.laion2b_s13b_b82k", "uc_merced", "trades", "FFT-50")]
    assert (clip.clean, clip.Linf, clip.L2, clip.L1, clip.common) == (
        0.9523809523809523,
        0.8,
        0.888095238095238,
        0.7492063492063492,
        0.8476190476190476,
    )  # fractions, read as written
    assert clip.eps == {"Linf": pytest.approx(4 / 255), "L2": 2.0, "L1": 75.0}  # the study's radii
    assert clip.n == dict.fromkeys(("clean", "Linf", "L2", "L1", "common"), 420)  # UC Merced's whole test split
    pets = rows[("efficientnet_b0.ra_in1k", "oxford_pets", "classic_at", "LP-50")]
    assert (pets.Linf, pets.L1, pets.n["clean"]) == (0.0, 0.09966666666666667, 1000)
    m = clean[("efficientnet_b0.ra_in1k", "oxford_pets", "classic_at", "LP-50")]
    assert m.run_id == "import:efficientnet_b0.ra_in1k:oxford_pets:classic_at:LP-50"
    assert m.versions == {
        "source": "arXiv:2508.14079",
        "file": "results_dataset.csv",
        "scale": "fraction",
        "layout": "paper",
        "provenance": {
            "model_size": "small",
            "model_type": "fully convolutional",
            "pre_training_strategy": "supervised",
            "pre_training_dataset": "in1k",
            "volume_pre_training_data": "1281167",
            "backbone_name": "efficientnet_b0,sup,in1k",
        },
    }  # sum, geom and the row index are not stored


def test_the_paper_layout_in_percent_and_its_errors_name_its_columns(tmp_path: Path):
    percent = write(tmp_path, [paper_row(3, "mobilevit-small", "flowers-102", "TRADES", "FFT (50 epochs)",
                                         (80, 30, 40, 20, 60))], name="p.csv")  # fmt: skip
    got = read_csv(percent)
    assert {m.versions["scale"] for m in got} == {"percent"}
    assert {m.threat: m.accuracy for m in got} == pytest.approx(
        {"clean": 0.8, "Linf": 0.3, "L2": 0.4, "L1": 0.2, "corruption": 0.6}
    )
    for old, new, message in (
        ("0.8,", "abc,", "line 2, column clean_acc: not a finite number: 'abc'"),
        (
            "FFT (50 epochs)",
            "FFT (10 epochs)",
            r"line 2, column ft_strategy: unknown protocol 'FFT \(10 epochs\)'.*the paper layout's spellings: "
            r"FFT \(50 epochs\), FFT \(5 epochs\), LP \(50 epochs\)",
        ),
        ("TRADES", "MART", "line 2, column loss_function: unknown loss 'MART'"),
    ):
        with pytest.raises(ValueError, match=message):
            read_csv(write(tmp_path, [ROWS[3].replace(old, new, 1)]))
    with pytest.raises(ValueError, match="line 1: missing required column.* of the paper layout: common_acc"):
        read_csv(write(tmp_path, [ROWS[3]], header=HEADER.replace(",common_acc", "")))


# ---------------------------------------------------------------------------------------------------- layouts
def test_an_unknown_layout_lists_the_columns_of_each_known_one(tmp_path: Path):
    with pytest.raises(ValueError) as error:
        read_csv(write(tmp_path, ["resnet50.a1_in1k,pets,0.8"], header="model,data,accuracy"))
    message = str(error.value)
    assert message.startswith("line 1: unknown layout: the header names no column of a known layout")
    assert (
        "rft-fast (the documented columns, docs/results.md): backbone, dataset, loss, protocol, clean, Linf" in message
    )
    assert (
        "paper (the paper's results_dataset.csv, arXiv 2508.14079): backbone, dataset, loss_function, "
        "ft_strategy, clean_acc, Linf_acc, L2_acc, L1_acc, common_acc" in message
    )
    assert "kept as provenance model_size" in message and "ignored '', sum, geom" in message
    with pytest.raises(ValueError, match="line 1: the header mixes the columns of the rft-fast and paper layouts"):
        read_csv(write(tmp_path, ["x,pets,0.8,0.7"], header="backbone,dataset,clean,clean_acc"))


# ---------------------------------------------------------------------------------------------------- Borda
# One protocol, two datasets, four (backbone, loss) entries; accuracies clean, Linf, L2, L1, common.
A, B, C = "resnet50.a1_in1k", "convnext_tiny.fb_in1k", "deit_tiny_patch16_224.fb_in1k"
BORDA = {
    "caltech101": {
        (A, "TRADES"): (0.90, 0.40, 0.50, 0.30, 0.70),
        (A, "Classic AT"): (0.85, 0.45, 0.50, 0.20, 0.60),
        (B, "TRADES"): (0.95, 0.30, 0.40, 0.10, 0.80),
        (C, "TRADES"): (0.80, 0.20, 0.30, 0.35, 0.50),
    },
    "flowers-102": {
        (A, "TRADES"): (0.70, 0.20, 0.30, 0.10, 0.50),
        (A, "Classic AT"): (0.75, 0.25, 0.35, 0.15, 0.55),
        (B, "TRADES"): (0.60, 0.10, 0.20, 0.05, 0.40),
        (C, "TRADES"): (0.65, 0.15, 0.25, 0.20, 0.45),
    },
}
# By hand, rank points per accuracy (lowest 1; ties share the lower rank):
#   caltech101   clean    Linf     L2            L1       common   total
#     A TRADES   3        3        3 (tie .50)   3        3        15
#     A CAT      2        4        3 (tie .50)   2        2        13
#     B TRADES   4        2        2             1        4        13
#     C TRADES   1        1        1             4        1         8
#   flowers-102: B is lowest everywhere (5 points); A TRADES 3+3+3+2+3 = 14, A CAT 4+4+4+3+4 = 19, C 2+2+2+4+2 = 12
#   FFT-50 totals: A CAT 32 (gold), A TRADES 29 (silver), C TRADES 20 (bronze), B TRADES 18
BY_HAND = [(A, "classic_at", 32), (A, "trades", 29), (C, "trades", 20), (B, "trades", 18)]


def test_report_borda_medals_on_a_paper_table_as_computed_by_hand(tmp_path: Path):
    rows = [
        paper_row(i, backbone, dataset, loss, "FFT (50 epochs)", accs)
        for i, (dataset, table) in enumerate(BORDA.items())
        for (backbone, loss), accs in table.items()
    ]
    rows.append(paper_row(99, B, "caltech101", "TRADES", "LP (50 epochs)", (0.1, 0.1, 0.1, 0.1, 0.1)))  # apart
    path, store_path, out = write(tmp_path, rows), tmp_path / "s.sqlite", tmp_path / "report"
    assert cli.main(["results", "import", str(path), "--store", str(store_path)]) == 0
    with Store(store_path) as store:
        table = report.rows_from_store(store)
    ranking = borda(table, "FFT-50")
    assert [(e["backbone"], e["loss"], e["points"]) for e in ranking] == BY_HAND
    assert [e["medal"] for e in ranking] == ["gold", "silver", "bronze", ""]
    assert [(e["backbone"], e["medal"], e["points"]) for e in borda(table, "LP-50")] == [(B, "gold", 5)]
    assert cli.main(["report", "--store", str(store_path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    medals = re.findall(r"^\| (\d) \| (gold|silver|bronze) \| ([^|]+) \| ([^|]+) \|", text, flags=re.M)
    assert [(m[1], m[2].strip(), m[3].strip()) for m in medals[:3]] == [
        ("gold", A, "classic_at"),
        ("silver", A, "trades"),
        ("bronze", C, "trades"),
    ]  # FFT-50 comes first in the report
