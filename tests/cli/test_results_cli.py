"""`rft-fast results` and `rft-fast report` on a store: --wide shows the attack mode(s) the store holds, --hparams,
failed grid stages after the table and with --failures, and the report's mode, header and Failed section."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from rft_fast import cli
from rft_fast.results import Measurement, Store

RESNET, DEIT_T = "resnet50.a1_in1k", "deit_tiny_patch16_224.fb_in1k"
EPS = {"Linf": 4 / 255, "L2": 2.0, "L1": 75.0}
HPARAMS = {"lr_head": 0.001, "random_init": True}


def measure(
    run_id: str, threat: str, accuracy: float, mode: str = "fast", backbone: str = RESNET, n: int = 64
) -> Measurement:
    key = dict(eps=None, corruption=None, severity=None, mode="-")
    if threat in EPS:
        key.update(eps=EPS[threat], mode=mode)
    elif threat == "corruption":
        key.update(corruption="study", severity=3)
    return Measurement(
        run_id=run_id,
        dataset="digits",
        backbone=backbone,
        loss="trades",
        protocol="FFT-5",
        hparams=HPARAMS,
        threat=threat,
        accuracy=accuracy,
        n=n,
        seconds=1.0,
        **key,
    )


def run(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.fixture
def fast_store(tmp_path: Path) -> str:
    """What the quick demo leaves: fast attack rows only, random init, one failed threat and one failed tuning."""
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.put_many(
            [
                measure("r1", t, a)
                for t, a in (("clean", 0.625), ("Linf", 0.25), ("L2", 0.3), ("L1", 0.1), ("corruption", 0.5))
            ]
        )
        store.put_many([measure("r2", "clean", 0.5, backbone=DEIT_T), measure("r2", "Linf", 0.2, backbone=DEIT_T)])
        store.set_stage(f"{DEIT_T}|trades|FFT-5|digits", "L1", "failed", "RuntimeError: CUDA out of\nmemory")
        store.set_stage("convnext_tiny.fb_in1k|trades|FFT-5|digits", "tune", "failed", "no finite metric")
        store.set_stage(f"{RESNET}|trades|FFT-5|digits", "L2", "failed", "diverged")
        store.set_stage(f"{RESNET}|trades|FFT-5|digits", "L2", "done")  # later succeeded: not a failure
    return str(path)


# ---------------------------------------------------------------------------------------------------- --wide modes
def test_wide_shows_the_only_mode_in_the_store(fast_store: str, capsys):
    wide = json.loads(run(capsys, "results", "--store", fast_store, "--wide", "--format", "json"))
    assert [(r["run_id"], r["mode"], r["Linf"]) for r in wide] == [("r1", "fast", 0.25), ("r2", "fast", 0.2)]
    assert wide[0]["L1"] == 0.1 and wide[0]["L1_eps"] == 75.0 and wide[1]["L2"] is None
    assert all("hparams" not in r for r in wide)  # hidden without --hparams
    # --mode still restricts: no standard rows, so no robust numbers (clean and common are mode-free)
    standard = json.loads(
        run(capsys, "results", "--store", fast_store, "--wide", "--mode", "standard", "--format", "json")
    )
    assert [(r["mode"], r["clean"], r["Linf"], r["L2"], r["L1"]) for r in standard] == [
        ("standard", 0.625, None, None, None),
        ("standard", 0.5, None, None, None),
    ]


def test_wide_shows_both_modes_labelled(tmp_path: Path, capsys):
    path = str(tmp_path / "s.sqlite")
    with Store(path) as store:
        store.put_many(
            [
                measure("a", "clean", 0.9),
                measure("a", "Linf", 0.4, "standard"),
                measure("a", "Linf", 0.5),
                measure("a", "L2", 0.6, "standard"),
                measure("b", "clean", 0.8),
                measure("b", "Linf", 0.3, "standard"),  # standard only
                measure("c", "clean", 0.7),
            ]
        )  # no attack row in either mode
    wide = json.loads(run(capsys, "results", "--store", path, "--wide", "--format", "json"))
    assert [(r["run_id"], r["mode"], r["clean"], r["Linf"], r["L2"]) for r in wide] == [
        ("a", "standard", 0.9, 0.4, 0.6),
        ("a", "fast", 0.9, 0.5, None),  # one row per mode, never mixed
        ("b", "standard", 0.8, 0.3, None),  # no empty fast row
        ("c", "-", 0.7, None, None),
    ]  # once, no attack mode to show
    table = run(capsys, "results", "--store", path, "--wide").splitlines()
    assert table[0].split()[:8] == ["run_id", "dataset", "backbone", "loss", "protocol", "n", "mode", "clean"]
    assert [line.split()[6] for line in table[2:]] == ["standard", "fast", "standard", "-"]
    fast = json.loads(run(capsys, "results", "--store", path, "--wide", "--mode", "fast", "--format", "json"))
    assert [(r["run_id"], r["mode"], r["Linf"]) for r in fast] == [
        ("a", "fast", 0.5),
        ("b", "fast", None),
        ("c", "fast", None),
    ]
    only_b = json.loads(run(capsys, "results", "--store", path, "--wide", "--run-id", "b", "--format", "json"))
    assert [(r["mode"], r["Linf"]) for r in only_b] == [("standard", 0.3)]  # the matching models' mode only


# ---------------------------------------------------------------------------------------------------- --hparams
def test_hparams_only_with_the_flag(fast_store: str, capsys):
    table = run(capsys, "results", "--store", fast_store, "--threat", "clean")
    assert "hparams" not in table.splitlines()[0] and "random_init" not in table
    assert "hparams" in run(capsys, "results", "--store", fast_store, "--threat", "clean", "--hparams").splitlines()[0]
    for extra in ((), ("--wide",)):
        rows = list(
            csv.DictReader(io.StringIO(run(capsys, "results", "--store", fast_store, *extra, "--format", "csv")))
        )
        assert rows and "hparams" not in rows[0]
        rows = list(
            csv.DictReader(
                io.StringIO(run(capsys, "results", "--store", fast_store, *extra, "--format", "csv", "--hparams"))
            )
        )
        assert json.loads(rows[0]["hparams"]) == HPARAMS
        listed = json.loads(run(capsys, "results", "--store", fast_store, *extra, "--format", "json", "--hparams"))
        assert listed[0]["hparams"] == HPARAMS
    long = json.loads(run(capsys, "results", "--store", fast_store, "--format", "json"))
    assert len(long) == 7 and "hparams" not in long[0] and {"versions", "timestamp", "n"} <= set(long[0])


# ---------------------------------------------------------------------------------------------------- failures
def test_table_lists_failed_stages_after_it(fast_store: str, capsys, tmp_path: Path):
    out = run(capsys, "results", "--store", fast_store, "--wide")
    table, failed = out.split("\nfailed stages (2):\n")
    assert "r1" in table and "r2" in table and "diverged" not in out  # the L2 failure was replaced by done
    lines = failed.splitlines()
    assert lines[0].split() == ["config", "stage", "reason"] and len(lines) == 2 + 2
    assert lines[2].split() == ["convnext_tiny.fb_in1k|trades|FFT-5|digits", "tune", "no", "finite", "metric"]
    assert lines[3].split()[:3] == [f"{DEIT_T}|trades|FFT-5|digits", "L1", "RuntimeError:"]
    assert lines[3].endswith("CUDA out of memory")  # the reason on one line
    assert "failed stages (2):" in run(capsys, "results", "--store", fast_store)  # the long listing too
    # CSV / JSON stay machine-readable: no failure section in them
    assert len(json.loads(run(capsys, "results", "--store", fast_store, "--format", "json"))) == 7
    assert "failed" not in run(capsys, "results", "--store", fast_store, "--format", "csv")
    # a table written to a file holds the table only; stdout says how to list the failures
    target = tmp_path / "t.txt"
    notice = run(capsys, "results", "--store", fast_store, "--output", str(target))
    assert "failed" not in target.read_text() and "2 failed stage(s): `rft-fast results --failures" in notice


def test_failures_flag_lists_only_failed_stages(fast_store: str, capsys):
    table = run(capsys, "results", "--store", fast_store, "--failures").splitlines()
    assert table[0].split() == ["config", "stage", "reason"] and len(table) == 2 + 2
    listed = json.loads(run(capsys, "results", "--store", fast_store, "--failures", "--format", "json"))
    assert [(r["config"], r["stage"], r["reason"]) for r in listed] == [
        ("convnext_tiny.fb_in1k|trades|FFT-5|digits", "tune", "no finite metric"),
        (f"{DEIT_T}|trades|FFT-5|digits", "L1", "RuntimeError: CUDA out of memory"),
    ]
    assert all(r["timestamp"] for r in listed)
    rows = list(
        csv.DictReader(
            io.StringIO(
                run(capsys, "results", "--store", fast_store, "--failures", "--format", "csv", "--backbone", DEIT_T)
            )
        )
    )
    assert [(r["stage"], r["reason"]) for r in rows] == [("L1", "RuntimeError: CUDA out of memory")]
    # nothing matches: a header-only CSV, an empty JSON list, a plain message in the table
    none = run(capsys, "results", "--store", fast_store, "--failures", "--format", "csv", "--backbone", RESNET)
    assert none == "config,stage,reason,timestamp\n"
    assert (
        json.loads(run(capsys, "results", "--store", fast_store, "--failures", "--format", "json", "--dataset", "pets"))
        == []
    )
    assert run(capsys, "results", "--store", fast_store, "--failures", "--loss", "ce") == "(no failed stages)\n"
    with pytest.raises(SystemExit):
        cli.main(["results", "--store", fast_store, "--failures", "--wide"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_failed_stages_no_section(tmp_path: Path, capsys):
    path = str(tmp_path / "s.sqlite")
    with Store(path) as store:
        store.put(measure("r1", "clean", 0.5))
        store.set_stage(f"{RESNET}|trades|FFT-5|digits", "tune", "done")
    assert "failed" not in run(capsys, "results", "--store", path)


# ---------------------------------------------------------------------------------------------------- report
def test_report_uses_the_stores_mode_and_lists_failures(fast_store: str, tmp_path: Path, capsys):
    out = run(capsys, "report", "--store", fast_store, "--out", str(tmp_path / "rep"))
    assert "attack mode fast, 2 configurations, 2 failed stages" in out and "also holds" not in out
    text = (tmp_path / "rep" / "report.md").read_text()
    header = text.split("## Borda count")[0]
    assert "- Attack mode: **fast**" in header and "Linf eps 4/255 = 0.0157; L2 eps 2; L1 eps 75" in header
    assert "- Test images per accuracy (n): clean 64; Linf 64; L2 64; L1 64; common 64." in header
    assert "**Randomly initialized: all configurations' models" in header
    # 0.625 of 64 images: Wilson [50.3, 73.3]
    assert f"| FFT-5 | digits | {RESNET} | trades | random | 62.5 [50.3, 73.3] | 25.0 [16.0, 36.8] |" in text
    failed = text.split("## Failed")[1]
    assert f"| {DEIT_T}\\|trades\\|FFT-5\\|digits | L1 | RuntimeError: CUDA out of memory |" in failed
    assert "convnext_tiny.fb_in1k\\|trades\\|FFT-5\\|digits | tune | no finite metric |" in failed
    assert "diverged" not in text
    # --mode standard: what it asks for, the robust columns empty
    run(capsys, "report", "--store", fast_store, "--out", str(tmp_path / "std"), "--mode", "standard")
    std = (tmp_path / "std" / "report.md").read_text()
    assert "- Attack mode: **standard**" in std and "Linf not measured" in std


def test_report_with_both_modes_defaults_to_standard_and_says_so(tmp_path: Path, capsys):
    path = str(tmp_path / "s.sqlite")
    with Store(path) as store:
        store.put_many([measure("a", "clean", 0.9), measure("a", "Linf", 0.4, "standard"), measure("a", "Linf", 0.5)])
    out = run(capsys, "report", "--store", path, "--out", str(tmp_path / "rep"))
    assert "attack mode standard" in out and "also holds fast attack rows: `rft-fast report --mode fast`" in out
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| 40.0 [28.9, 52.2] |" in text and "## Failed\n\nNo failed stages." in text
