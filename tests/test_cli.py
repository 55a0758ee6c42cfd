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
    code = cli.main(["bench", "ops", "--device", "cpu", "--shapes", "2x3x8x8", "--min-seconds", "0", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    meta, rows = result["meta"], result["rows"]
    assert {"device", "torch", "date", "command", "threads"} <= set(meta)
    timed = [b for b in ops.backends("cpu") if b != "triton"]  # the CPU interpreter is not timed
    assert len(rows) == 3 * 3 * len(timed)
    assert {(r["op"], r["norm"], r["backend"]) for r in rows} == {
        (o, n, b) for o in ("project", "pgd_step", "apgd_step") for n in ops.NORMS for b in timed
    }
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
    proc = subprocess.run([sys.executable, "-m", "rft_fast.cli", "bench", "ops", "--help"], capture_output=True, text=True)
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
    assert cli.main(["bench", "kl", "--device", "cpu", "--classes", "3", "37", "--batches", "2", "--min-seconds", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    timed = [b for b in ops.backends("cpu", "trades_kl") if b != "triton"]
    assert {(r["backend"], r["c"]) for r in rows} == {(b, c) for b in timed for c in (3, 37)}
    assert all(r["gbps"] > 0 and r["copy_gbps"] > 0 for r in rows)


def test_bench_trades_memory_saving_halves_saved_activations(tmp_path):
    pytest.importorskip("timm")
    out = tmp_path / "trades.json"
    args = ["bench", "trades", "--device", "cpu", "--models", "resnet10t", "--batch", "2", "--image-size", "64",
            "--attack-steps", "1", "--max-memory-gb", "0.1", "--json", str(out)]
    assert cli.main(args) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["memory_measure"].startswith("saved-activation")
    std, ms = result["rows"]
    assert (std["variant"], ms["variant"]) == ("standard", "memory-saving")
    assert std["mem_ratio"] == pytest.approx(1.0) and ms["mem_ratio"] < 0.6
    assert 1 <= std["max_batch"] and ms["max_batch"] >= 1.8 * std["max_batch"] - 1
