"""bench/gpu_run.py (`make gpu-bench`) in dry form, and `rft-fast bench ops --dry`: no GPU needed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from rft_fast.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "bench" / "gpu_run.py")
gpu_run = sys.modules.setdefault("gpu_run", importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(gpu_run)


def test_plan_runs_every_registered_suite_sized_within_the_budget(tmp_path: Path) -> None:
    suites = gpu_run.registered_suites()
    assert {"ops", "kl"} <= set(suites)
    assert set(gpu_run.SUITE_ARGS) == set(suites), "size the new suite in bench/gpu_run.py's SUITE_ARGS"
    steps = gpu_run.plan("python3", tmp_path, "gpu", "9.0")
    by_name = {s.name: s for s in steps}
    assert [s.name for s in steps[:3]] == ["build", "tests-gpu", "tests-nonfinite-cuda"]
    assert sum(s.budget_s for s in steps) <= gpu_run.TOTAL_BUDGET_S
    parser = build_parser()
    for suite in [*suites, "ops-dry"]:
        cmd = by_name[suite].command
        assert cmd[:4] == ["python3", "-m", "rft_fast.cli", "bench"]
        args = parser.parse_args(cmd[3:])  # every flag of the plan exists in the CLI
        assert args.suite == cmd[4] and args.json == by_name[suite].result
        assert Path(args.json).parent == tmp_path


def test_dry_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_run.main(["--dry", "--python", "py3"]) == 0
    out = capsys.readouterr().out
    for name in ["build", "tests-gpu", *gpu_run.registered_suites()]:
        assert f"\n{name} " in "\n" + out
    assert "py3 setup.py build_ext --inplace" in out


def test_a_failed_or_slow_step_is_recorded_and_the_run_goes_on() -> None:
    failed = gpu_run.run_step(gpu_run.Step("fails", [sys.executable, "-c", "import sys; print('x'); sys.exit(3)"], 30))
    assert (failed["status"], failed["rc"], failed["output_tail"].strip()) == ("failed", 3, "x")
    slow = gpu_run.run_step(gpu_run.Step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 1))
    assert slow["status"] == "timeout" and slow["seconds"] < 20
    missing = gpu_run.run_step(gpu_run.Step("missing", ["/nonexistent/python"], 5))
    assert missing["status"] == "failed"


def test_ops_dry_compiles_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dry.json"
    argv = ["bench", "ops", "--dry", "--shapes", "2x3x4x4", "--norms", "Linf", "--ops", "project", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["meta"]["dry"] is True
    assert [(r["kernel"], r["arch"]) for r in result["triton"]] == [
        ("_linf_project_kernel", "sm_80"),
        ("_linf_project_kernel", "sm_90"),
    ]
    assert all(r["registers"] > 0 and r["spill_stores"] == 0 for r in result["triton"])
    assert "_linf_project_kernel" in capsys.readouterr().out


def test_ops_dry_refuses_a_cpu_device() -> None:
    with pytest.raises(SystemExit, match="--dry reports the CUDA kernels"):
        main(["bench", "ops", "--dry", "--device", "cpu"])
