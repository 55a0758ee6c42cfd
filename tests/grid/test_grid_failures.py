"""One bad configuration never stops the grid: a tuning whose every trial fails, an evaluation threat that
raises and a 3-class task in one grid; the others finish, failures are stored with their reason, the command exits 1 with
the summary, and a rerun measures only what is missing (tuning not redone, stored rows untouched)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from rft_fast import cli
from rft_fast.results import Store

evaluate_module = importlib.import_module("rft_fast.eval.runs")  # the module that calls autoattack

pytestmark = pytest.mark.filterwarnings("ignore")
# image_size 8 is a valid TrainConfig, but DeiT's 16-pixel patches do not fit it: every trial fails at run time
# (a learning rate that diverges is out of TrainConfig's range, (0, 10], and no in-range one reliably does)
GOOD, BAD = 32, 8
KEYS = {
    f"deit_tiny_patch16_224.fb_in1k|classic_at|FFT-5[image_size={size}]|{ds}": (ds, size)
    for ds in ("digits", "digits3")
    for size in (BAD, GOOD)
}


def spec(tmp_path: Path) -> Path:
    raw = yaml.safe_load((ROOT / "examples" / "quick.yaml").read_text())
    raw.update(
        backbones=["deit_tiny_patch16_224.fb_in1k"],
        losses=["classic_at"],
        datasets=["digits", "digits3"],
        num_samples=1,
        budget_minutes=10,
        axes={"image_size": [BAD, GOOD]},
        store="runs/results.sqlite",
        out_dir="runs",
        search={"lr_backbone": 1e-3, "lr_head": 3e-3},
    )
    del raw["fixed"]["image_size"]
    raw["fixed"].update(
        epochs=1, batch_size=32, effective_batch=32, max_batches=2, attack_steps=2, val_steps=2, val_samples=32
    )
    raw["eval"].update(n=8, threats=["clean", "L2", "L1"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_failures_are_recorded_the_grid_goes_on_and_a_rerun_measures_only_what_is_missing(
    tmp_path, monkeypatch, capsys, ray_address
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    real = evaluate_module.autoattack

    def l1_breaks_on_ten_classes(model, x, y, *, norm, **kw):
        if norm == "L1" and model(x[:1]).shape[1] == 10:
            raise RuntimeError("injected L1 failure")
        return real(model, x, y, norm=norm, **kw)

    monkeypatch.setattr(evaluate_module, "autoattack", l1_breaks_on_ten_classes)
    path = str(spec(tmp_path))
    assert cli.main(["grid", path, "--address", ray_address]) == 1
    out = capsys.readouterr().out
    lines = {line.split(": ")[0].split("] ")[1]: line for line in out.splitlines() if line.startswith("[")}
    assert set(lines) == set(KEYS)
    bad_digits, good_digits, bad_three, good_three = KEYS
    for bad in (bad_digits, bad_three):
        assert ": failed" in lines[bad] and "Kernel size can't be greater than actual input size" in lines[bad], lines[
            bad
        ]
    assert ": failed" in lines[good_digits] and "L1: injected L1 failure" in lines[good_digits]
    assert ": done" in lines[good_three]
    summary = out.strip().splitlines()[-2]  # the last line is the disk use
    assert summary.startswith("1/4 done, 3 failed: ") and f"{good_digits}: L1: injected L1 failure" in summary

    with Store(tmp_path / "runs" / "results.sqlite") as store:
        rows = store.query()
        failed = {(s.config, s.stage): s.reason for s in store.stages(status="failed")}
        tuned = {s.config: s.detail for s in store.stages() if s.stage == "tune" and s.status == "done"}
    assert set(tuned) == {good_digits, good_three}
    assert failed[(good_digits, "L1")] == "injected L1 failure"
    assert failed[(bad_digits, "tune")] and failed[(bad_three, "tune")]
    by_dataset = {ds: {(m.threat, m.eps) for m in rows if m.dataset == ds} for ds in ("digits", "digits3")}
    assert by_dataset["digits"] == {("clean", None), ("L2", 2.0)}  # L1 failed, the other threats stored
    assert by_dataset["digits3"] == {("clean", None), ("L2", 2.0), ("L1", 75.0)}
    three = [m for m in rows if m.dataset == "digits3" and m.threat in ("L2", "L1")]
    assert all(
        m.versions["autoattack"]["attacks"] == ["apgd-ce", "apgd-dlr"]
        and m.versions["autoattack"]["n_classes"] == 3
        and m.versions["autoattack"]["apgd_targets"] == 2
        for m in three
    )

    # The report is written despite the failures.
    assert cli.main(["report", "--store", "runs/results.sqlite", "--out", "report", "--mode", "fast"]) == 0
    assert (tmp_path / "report" / "report.md").is_file()

    # Rerun without the injected failure: only L1 of the 10-class configuration is measured, nothing re-tuned.
    monkeypatch.setattr(evaluate_module, "autoattack", real)
    trials_before = sorted(p.name for p in (tmp_path / "runs" / "tune").glob("*/*") if p.is_dir())
    capsys.readouterr()
    assert (
        cli.main(["grid", path, "--address", ray_address]) == 1
    )  # the failing configurations fail again (their trials stay errored)
    out = capsys.readouterr().out
    lines = {line.split(": ")[0].split("] ")[1]: line for line in out.splitlines() if line.startswith("[")}
    assert ": done" in lines[good_digits] and ": skipped" in lines[good_three]
    assert sorted(p.name for p in (tmp_path / "runs" / "tune").glob("*/*") if p.is_dir()) == trials_before
    with Store(tmp_path / "runs" / "results.sqlite") as store:
        after = store.query()
        assert store.stage(good_digits, "L1").status == "done"
    assert [m for m in after if m.threat != "L1" or m.dataset != "digits"] == rows  # untouched, same timestamps
    assert {(m.threat, m.eps) for m in after if m.dataset == "digits"} == {("clean", None), ("L2", 2.0), ("L1", 75.0)}
