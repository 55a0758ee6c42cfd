"""`make gpu-bench`: on a machine with a CUDA GPU, build the extension, run the GPU tests and every bench suite.

One command, about 10 minutes in all: each step runs in its own process under a time budget (STEPS, SUITE_ARGS);
a failed or timed-out step is recorded and the rest still run. Writes, under --out (default bench/results):
<suite>-cuda-<device>.json per bench suite (each with device, versions, date and command, as the suites write them)
and gpu_run-<device>.json (the environment, every step's command, status, seconds and output tail).

    python3 bench/gpu_run.py [--python python3] [--out bench/results]
    python3 bench/gpu_run.py --dry        # the plan only; needs no GPU

Meant for a machine with its own torch / triton / timm (not this repo's venv) and no internet: the extension is
built in place against that torch (setup.py finds CUDA_HOME), and everything runs with PYTHONPATH=<repo>.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOTAL_BUDGET_S = 600

# Sizes that fit the budget on one H100 / H200; a suite registered in rft_fast/cli/bench.py but missing here fails
# tests/bench/test_gpu_plan.py, so a new suite is sized when it is added.
SUITE_ARGS: dict[str, tuple[int, list[str]]] = {
    "ops": (40, ["--min-seconds", "0.1"]),
    "kl": (25, ["--batches", "256", "--min-seconds", "0.1"]),
    "trades": (45, ["--models", "resnet50", "--batch", "64", "--attack-steps", "5"]),
    "attack": (45, ["--models", "resnet50", "--batch", "128", "--min-reps", "2"]),
    "train": (45, ["--models", "resnet50", "--attack-steps", "5", "--min-reps", "2"]),
    "eval": (45, ["--n", "128", "--mode", "fast", "--norms", "Linf"]),
    "regularizers": (25, ["--min-reps", "3"]),
    "tora": (35, ["--batch", "32", "--attack-steps", "5"]),
    "data": (30, ["--n", "512", "--workers", "8"]),
}


@dataclass
class Step:
    """One process of the run: its name, command line, time budget and environment additions."""

    name: str
    command: list[str]
    budget_s: int
    env: dict[str, str] = field(default_factory=dict)
    result: str | None = None  # the JSON file the step writes, if any


def registered_suites() -> list[str]:
    """The bench suites `rft-fast bench` registers (rft_fast/cli/bench.py), from its parser."""
    sys.path.insert(0, str(REPO))
    from rft_fast.cli import build_parser

    def subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices

    return list(subcommands(subcommands(build_parser())["bench"]))


def device_slug() -> str:
    """e.g. "nvidia-h200" from the GPU's name; "cuda" where none is visible."""
    try:
        import torch

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cuda"
    except ImportError:
        name = "cuda"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def capability() -> str:
    """The GPU's compute capability as TORCH_CUDA_ARCH_LIST spells it ("9.0"), or "8.0;9.0" without one."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return f"{major}.{minor}"
    except ImportError:
        pass
    return "8.0;9.0"


def plan(python: str, out: Path, slug: str, arch_list: str) -> list[Step]:
    """The steps, in order: build, GPU tests, the dry PTX report, then every registered bench suite."""
    cli = [python, "-m", "rft_fast.cli", "bench"]
    tests = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    steps = [
        Step(
            "build",
            [python, "setup.py", "build_ext", "--inplace"],
            115,
            {"RFT_FAST_REQUIRE_EXT": "1", "TORCH_CUDA_ARCH_LIST": arch_list, "MAX_JOBS": str(os.cpu_count() or 4)},
        ),
        # TRITON_INTERPRET=0: tests/conftest.py defaults it to 1 (the CPU tests) unless it is set.
        Step("tests-gpu", [*tests, "-m", "gpu", "tests"], 85, {"TRITON_INTERPRET": "0"}),
        Step(
            "tests-nonfinite-cuda", [*tests, "tests/ops/test_nonfinite.py", "-k", "cuda"], 30, {"TRITON_INTERPRET": "0"}
        ),
    ]
    dry = out / f"ops-dry-{slug}.json"
    steps.append(Step("ops-dry", [*cli, "ops", "--device", "cuda", "--dry", "--json", str(dry)], 30, result=str(dry)))
    for suite in registered_suites():
        budget, args = SUITE_ARGS.get(suite, (30, []))
        result = out / f"{suite}-cuda-{slug}.json"
        steps.append(
            Step(suite, [*cli, suite, "--device", "cuda", *args, "--json", str(result)], budget, result=str(result))
        )
    return steps


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def run_step(step: Step) -> dict[str, object]:
    """Runs one step under its budget; never raises for the step's own failure."""
    env = {**os.environ, **step.env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    try:
        done = subprocess.run(step.command, cwd=REPO, env=env, capture_output=True, text=True, timeout=step.budget_s)
        status = "ok" if done.returncode == 0 else "failed"
        rc, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        status, rc, output = "timeout", None, _tail(e.stdout) + _tail(e.stderr)
    except OSError as e:
        status, rc, output = "failed", None, str(e)
    seconds = round(time.perf_counter() - start, 1)
    wrote = bool(step.result) and Path(step.result).is_file()
    return {
        **asdict(step),
        "status": status,
        "rc": rc,
        "seconds": seconds,
        "wrote": wrote,
        "output_tail": _tail(output),
    }


def environment(python: str, command: str) -> dict[str, object]:
    """The run's record: the device and versions as the machine's python sees them, date, command."""
    probe = (
        "import json, platform, torch\n"
        "try:\n import triton; t = triton.__version__\nexcept ImportError:\n t = None\n"
        "print(json.dumps({'device': torch.cuda.get_device_name() if torch.cuda.is_available() else None,"
        " 'torch': torch.__version__, 'cuda': torch.version.cuda, 'triton': t, 'python': platform.python_version()}))"
    )
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
        versions = json.loads(done.stdout) if done.returncode == 0 else {"probe_error": _tail(done.stderr, 500)}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        versions = {"probe_error": str(e)}
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**versions, "host": platform.node(), "date": date, "command": command}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--python", default=os.environ.get("PYTHON", "python3"), help="the machine's python (PYTHON)")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder of the JSON results")
    p.add_argument("--dry", action="store_true", help="print the plan, run nothing")
    args = p.parse_args(argv)
    out = Path(args.out)
    slug = "cuda" if args.dry else device_slug()
    steps = plan(args.python, out, slug, "8.0;9.0" if args.dry else capability())
    total = sum(s.budget_s for s in steps)
    if args.dry:
        for s in steps:
            extra = " ".join(f"{k}={v}" for k, v in s.env.items())
            print(f"{s.name:22} {s.budget_s:4d} s  {extra + ' ' if extra else ''}{' '.join(s.command)}")
        print(f"{len(steps)} steps, {total} s budget in all (limit {TOTAL_BUDGET_S} s)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    record = {"meta": environment(args.python, " ".join([sys.executable, *sys.argv])), "budget_s": total, "steps": []}
    summary = out / f"gpu_run-{slug}.json"
    for s in steps:
        print(f"[{s.name}] {' '.join(s.command)} (budget {s.budget_s} s)", flush=True)
        r = run_step(s)
        record["steps"].append(r)
        print(f"[{s.name}] {r['status']} in {r['seconds']} s", flush=True)
        summary.write_text(json.dumps(record, indent=1) + "\n")  # after each step: a killed run keeps what ran
    failed = [r["name"] for r in record["steps"] if r["status"] != "ok"]
    print(f"wrote {summary}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
