"""`rft-fast bench ops`: the table, the JSON record and argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

from rft_fast import cli, ops


def test_bench_ops_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "ops.json"
    code = cli.main(
        ["bench", "ops", "--device", "cpu", "--shapes", "2x3x8x8", "--min-seconds", "0", "--json", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    meta, rows = result["meta"], result["rows"]
    assert {"device", "torch", "date", "command", "threads"} <= set(meta)
    timed = [b for b in ops.backends("cpu") if b != "triton"]  # the CPU interpreter is not timed
    # each kernel backend twice (check=False, then the default call's check=True), torch eager once
    expected = {
        (o, n, b, c)
        for o in ("project", "pgd_step", "apgd_step")
        for n in ops.NORMS
        for b in timed
        for c in ((False,) if b == "torch" else (False, True))
    }
    assert len(rows) == len(expected)
    assert {(r["op"], r["norm"], r["backend"], r["check"]) for r in rows} == expected
    for r in rows:
        assert r["median_ms"] > 0 and r["gbps"] > 0 and r["copy_gbps"] > 0
        if r["backend"] == "torch":
            assert r["vs_torch"] == pytest.approx(1.0)
    table = capsys.readouterr().out
    assert "x torch" in table and "copy GB/s" in table and "pgd_step" in table


def test_bench_ops_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "ops", "--shapes", "64by3"])
    assert "shape must look like" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "ops", "--norms", "L3"])


def test_help_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "rft_fast.cli", "bench", "ops", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "--json" in proc.stdout


def test_console_script_is_declared():
    try:
        eps = metadata.entry_points(group="console_scripts")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        pytest.skip("rft-fast is not installed")
    names = {ep.name: ep.value for ep in eps}
    if "rft-fast" not in names:
        pytest.skip("rft-fast is not installed in this environment (source-tree run)")
    assert names["rft-fast"] == "rft_fast.cli:main"


def test_bench_kl_rows(tmp_path):
    out = tmp_path / "kl.json"
    assert (
        cli.main(
            [
                "bench",
                "kl",
                "--device",
                "cpu",
                "--classes",
                "3",
                "37",
                "--batches",
                "2",
                "--min-seconds",
                "0",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    timed = [b for b in ops.backends("cpu", "trades_kl") if b != "triton"]
    assert {(r["backend"], r["c"]) for r in rows} == {(b, c) for b in timed for c in (3, 37)}
    assert all(r["gbps"] > 0 and r["copy_gbps"] > 0 for r in rows)


@pytest.mark.slow
def test_bench_trades_memory_saving_halves_saved_activations(tmp_path):
    pytest.importorskip("timm")
    out = tmp_path / "trades.json"
    args = [
        "bench",
        "trades",
        "--device",
        "cpu",
        "--models",
        "resnet10t",
        "--batch",
        "2",
        "--image-size",
        "64",
        "--attack-steps",
        "1",
        "--max-memory-gb",
        "0.1",
        "--json",
        str(out),
    ]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["memory_measure"].startswith("saved-activation")
    std, ms = result["rows"]
    assert (std["variant"], ms["variant"]) == ("standard", "memory-saving")
    assert std["mem_ratio"] == pytest.approx(1.0) and ms["mem_ratio"] < 0.6
    assert 1 <= std["max_batch"] and ms["max_batch"] >= 1.8 * std["max_batch"] - 1


def test_train_command_writes_metrics_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--backbone",
        "deit_tiny_patch16_224.fb_in1k",
        "--dataset",
        "digits",
        "--random-init",
        "--protocol",
        "FFT-5",
        "--epochs",
        "1",
        "--max-batches",
        "2",
        "--batch-size",
        "4",
        "--effective-batch",
        "8",
        "--image-size",
        "32",
        "--val-samples",
        "12",
        "--attack-steps",
        "2",
        "--val-steps",
        "2",
        "--loss",
        "trades",
        "--attack-eps",
        "4/255",
        "--no-progress",
        "--device",
        "cpu",
        "--out-dir",
        str(out),
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    row = json.loads(printed.splitlines()[0])
    assert row["epoch"] == 1 and row["train_samples"] == 8 and row["optimizer_steps"] == 1 and row["val_samples"] == 12
    assert "status: completed" in printed
    saved = json.loads((out / "config.json").read_text())
    assert (
        saved["attack_eps"] == pytest.approx(4 / 255) and saved["loss"] == "trades" and saved["memory_saving"] is True
    )
    assert [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()] == [row]
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "mart"], "invalid choice|loss must be one of"),
        (["--effective-batch", "6"], "multiple of batch_size"),
        (["--attack-eps", "4/0"], "expected a number"),
    ],
)
def test_train_command_rejects_bad_arguments(args, message, capsys):
    base = [
        "train",
        "--backbone",
        "deit_tiny_patch16_224.fb_in1k",
        "--dataset",
        "digits",
        "--random-init",
        "--batch-size",
        "4",
    ]
    with pytest.raises(SystemExit) as exc:
        cli.main(base + args)
    text = str(exc.value) + capsys.readouterr().err
    assert __import__("re").search(message, text), text


def test_train_command_names_missing_weights(capsys, tmp_path, monkeypatch):
    """No file given: hub weights; offline with an empty cache, the refusal says how to fetch them."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="rft-fast models fetch resnet50.a1_in1k"):
        cli.main(["train", "--backbone", "resnet50.a1_in1k", "--dataset", "digits", "--out-dir", str(tmp_path / "r")])


def test_models_command_lists_and_filters(capsys):
    assert cli.main(["models"]) == 0
    full = capsys.readouterr().out.splitlines()
    assert len(full) == 2 + 40
    assert cli.main(["models", "list", "vit_small*", "--pretraining", "self-supervised"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["vit_small_patch16_224.dino"]
    with pytest.raises(SystemExit, match="arch"):
        cli.main(["models", "list", "--arch", "recurrent"])


def test_models_convert_command(tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    from rft_fast import models

    src_model = models.create("deit_tiny_patch16_224.fb_in1k", 10, random_init=True)
    state = {"model": {f"module.model.{k}": v for k, v in src_model.backbone.state_dict().items()}}
    src = tmp_path / "deit.pth"
    torch.save({"state_dict": {k.removeprefix("module.model."): v for k, v in state["model"].items()}}, src)
    dst = tmp_path / "deit.safetensors"
    assert cli.main(["models", "convert", "deit_tiny_patch16_224.fb_in1k", str(src), str(dst)]) == 0
    converted = load_file(dst)
    assert "head.weight" not in converted and torch.equal(converted["cls_token"], src_model.backbone.cls_token.detach())
    with pytest.raises(SystemExit, match="not found"):
        cli.main(["models", "convert", "robust_resnet50", str(tmp_path / "missing.pt"), str(dst)])


def test_datasets_command_shows_layouts(capsys):
    assert cli.main(["datasets"]) == 0
    table = capsys.readouterr().out
    for name in ("caltech101", "fgvc_aircraft", "flowers102", "oxford_pets", "stanford_cars", "uc_merced", "digits"):
        assert name in table
    assert "101_ObjectCategories" in table


def test_bench_train_rows(tmp_path):
    out = tmp_path / "train.json"
    assert (
        cli.main(
            [
                "bench",
                "train",
                "--device",
                "cpu",
                "--models",
                "test_resnet",
                "--batch",
                "2",
                "--image-size",
                "32",
                "--attack-steps",
                "2",
                "--dtypes",
                "float32",
                "--min-reps",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert {(r["loss"], r["impl"]) for r in rows} == {
        (l, i) for l in ("classic_at", "trades") for i in ("rft-fast", "reference", "default")
    }
    # the default configuration's row: the precision amp "auto" resolves to here (tests pin it to float32)
    assert {r["dtype"] for r in rows if r["impl"] == "default"} == {"float32"}
    for r in rows:
        assert r["images_per_s"] > 0 and r["saved_gb"] > 0
        if r["impl"] == "reference":
            assert r["speedup"] == pytest.approx(1.0) and r["mem_ratio"] == pytest.approx(1.0)
    trades = {r["impl"]: r for r in rows if r["loss"] == "trades"}
    assert trades["rft-fast"]["mem_ratio"] < 0.75  # memory-saving TRADES keeps one graph of two


def test_bench_eval_rows(tmp_path):
    out = tmp_path / "eval.json"
    assert (
        cli.main(
            [
                "bench",
                "eval",
                "--device",
                "cpu",
                "--model",
                "test_resnet",
                "--n",
                "2",
                "--image-size",
                "32",
                "--mode",
                "fast",
                "--norms",
                "L2",
                "--cache-size",
                "32",
                "--workers",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["clean", "L2 fast", "corruptions", "digits"]
    assert rows[0]["accuracy"] == 1.0  # labels are the model's own predictions
    assert all(r["seconds"] > 0 for r in rows)
    # n: the digits test split under the study's split, ceil(.2 * 1797)
    assert rows[-1]["part"] == "cache build" and rows[-1]["workers"] == 1 and rows[-1]["n"] == 360


def test_results_import_and_report_commands(tmp_path, capsys):
    csv_file = tmp_path / "study.csv"
    csv_file.write_text(
        "backbone,dataset,loss,protocol,clean,Linf,L2,L1,common\n"
        "resnet50.a1_in1k,uc_merced,classic_at,FFT-50,90.0,60.0,70.0,50.0,80.0\n"
        "resnet50.a1_in1k,uc_merced,trades,FFT-50,88.0,62.0,71.0,52.0,79.0\n"
        "deit_tiny_patch16_224.fb_in1k,uc_merced,classic_at,FFT-50,85.0,55.0,65.0,45.0,75.0\n"
    )
    store = tmp_path / "s.sqlite"
    assert cli.main(["results", "import", str(csv_file), "--store", str(store)]) == 0
    assert "imported 15 measurements" in capsys.readouterr().out
    assert cli.main(["results", "--store", str(store), "--wide", "--format", "json"]) == 0
    wide = json.loads(capsys.readouterr().out)
    assert len(wide) == 3 and {r["clean"] for r in wide} == {0.90, 0.88, 0.85}
    assert cli.main(["report", "--store", str(store), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "gold" in text and "resnet50.a1_in1k" in text
    with pytest.raises(SystemExit, match="no results store"):
        cli.main(["report", "--store", str(tmp_path / "missing.sqlite")])


def test_grid_dry_run_text_and_json(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "train-x.json").write_text(
        json.dumps(
            {
                "meta": {"device_type": "cuda", "device": "NVIDIA H100"},
                "rows": [
                    {
                        "impl": "rft-fast",
                        "model": "deit_tiny_patch16_224",
                        "loss": "classic_at",
                        "dtype": "float32",
                        "batch": 64,
                        "size": 32,
                        "median_s": 0.64,
                    },
                    {
                        "impl": "rft-fast",
                        "model": "deit_tiny_patch16_224",
                        "loss": "trades",
                        "dtype": "float32",
                        "batch": 64,
                        "size": 32,
                        "median_s": 0.64,
                    },
                ],
            }
        )
    )
    assert cli.main(["grid", "examples/quick.yaml", "--dry-run", "--bench-results", str(bench), "--gpus", "2"]) == 0
    text = capsys.readouterr().out
    assert "grid 'quick': 4 configurations (2 backbones x 2 losses x 1 protocols x 1 datasets)" in text
    assert "trials per configuration: 2, 2 at a time on 2 GPU(s)" in text
    assert "estimate from measured step times (cuda NVIDIA H100)" in text
    assert "2 configurations measured, 2 extrapolated" in text
    assert cli.main(["grid", "examples/quick.yaml", "--dry-run", "--bench-results", str(bench), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_configs"] == 4 and summary["budget_bound_hours"] == pytest.approx(4 * 2 / 60)
    # 0.01 s per image at APGD-10, x (3 + 1) / 11 for the grid's 3 attack steps; an epoch is 256 train + 32 val
    # images x (3 + 1) / (3 + 1); 2 epochs under ASHA(grace 2, eta 2): no rung below 2, so 2 expected; 2 trials
    measured = [c for c in summary["estimate"]["configs"] if c["source"] == "measured"]
    expected = 0.01 * 4 / 11 * (256 + 32) * 2 * 2
    assert [c["hours"] * 3600 for c in measured] == pytest.approx([expected, expected])


def test_grid_rejects_a_bad_spec(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "backbones: [resnet50.a1_in1kk]\nlosses: [trades]\nprotocols: [FFT-5]\ndatasets: [digits]\n"
        "search: {}\nbudget_minutes: 1\nstore: r.sqlite\nout_dir: runs\nrandom_init: true\n"
    )
    with pytest.raises(SystemExit, match="backbones: unknown backbone 'resnet50.a1_in1kk'"):
        cli.main(["grid", str(spec), "--dry-run"])


def test_bench_tora_rows(tmp_path):
    out = tmp_path / "tora.json"
    assert (
        cli.main(
            [
                "bench",
                "tora",
                "--device",
                "cpu",
                "--models",
                "deit_tiny_patch16_224.fb_in1k",
                "--batch",
                "2",
                "--image-size",
                "32",
                "--attack-steps",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"FFT", "LP", "TORA-phase1", "TORA-phase2"}
    assert rows["FFT"]["trainable_m"] == rows["FFT"]["total_m"]  # everything trains
    assert 0 < rows["LP"]["trainable_m"] < rows["TORA-phase2"]["trainable_m"] < rows["TORA-phase1"]["trainable_m"]
    assert rows["TORA-phase1"]["total_m"] > rows["FFT"]["total_m"]  # the adapters, tokens, fusion and heads
    assert all(r["median_s"] > 0 and r["batch"] == 2 and r["size"] == 32 for r in rows.values())
