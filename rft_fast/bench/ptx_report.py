"""`rft-fast bench ops --dry`: what the GPU kernels compile to, without a GPU.

Triton: the binaries the ops suite's arguments would launch (rft_fast.kernels.aot records them from the launchers
and compiles them for sm_80 and sm_90): registers, shared memory, spills, global loads / stores by width
(v4 = 128 bits) and the per-row values loaded per element (eps / step gathers a per-row load could replace).
CUDA (csrc/cuda, the built rft_fast._C): registers, stack, shared and local memory per kernel and arch, from
`cuobjdump --dump-resource-usage` (CUDA toolkit, or the copy in Triton's nvidia backend).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from rft_fast.bench.common import environment


def find_cuobjdump() -> str | None:
    """cuobjdump from CUDA_HOME, the PATH, /usr/local/cuda*, or Triton's nvidia backend (which ships one)."""
    homes = [os.environ.get("CUDA_HOME"), *sorted(map(str, Path("/usr/local").glob("cuda*")))]
    candidates = [Path(h) / "bin" / "cuobjdump" for h in homes if h]
    found = shutil.which("cuobjdump")
    if found:
        candidates.insert(1, Path(found))
    spec = importlib.util.find_spec("triton")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    return next((str(c) for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def extension_path() -> str | None:
    """The built rft_fast._C, if any."""
    spec = importlib.util.find_spec("rft_fast._C")
    return spec.origin if spec and spec.origin else None


_FUNCTION = re.compile(r"^\s*Function (\S+):\s*$")
_USAGE = re.compile(r"(\w+(?:\[\d+\])?):(\d+)")


def _demangle(names: Sequence[str]) -> dict[str, str]:
    """Mangled -> readable kernel name (template arguments kept, parameters dropped); as is without c++filt."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout.split("\n")
    readable = {}
    for mangled, text in zip(names, out):
        text = re.sub(r"\(anonymous namespace\)::", "", text)
        depth, cut = 0, len(text)
        for i, ch in enumerate(text):  # drop the parameter list: the first '(' outside template brackets
            depth += {"<": 1, ">": -1}.get(ch, 0)
            if ch == "(" and depth == 0:
                cut = i
                break
        head, bracket, arguments = text[:cut].removeprefix("void ").partition("<")
        readable[mangled] = head.split("::")[-1] + bracket + arguments if cut else mangled
    return readable


def parse_resource_usage(text: str) -> list[dict[str, object]]:
    """cuobjdump --dump-resource-usage's output as {arch, kernel (mangled), REG, STACK, SHARED, LOCAL, ...} rows."""
    rows: list[dict[str, object]] = []
    arch, current = None, None
    for line in text.splitlines():
        m = re.match(r"^\s*arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
            continue
        m = _FUNCTION.match(line)
        if m:
            current = m.group(1)
            continue
        if current and "REG:" in line:
            rows.append({"arch": arch, "kernel": current, **{k: int(v) for k, v in _USAGE.findall(line)}})
            current = None
    return rows


def cuda_resources(so_path: str | None = None) -> dict[str, object]:
    """Per-kernel resource usage of the CUDA extension: {"path", "tool", "rows" or "error"}."""
    path = so_path or extension_path()
    tool = find_cuobjdump()
    if not path or not tool:
        return {"path": path, "tool": tool, "rows": [], "error": "no built rft_fast._C" if not path else "no cuobjdump"}
    done = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True)
    if done.returncode:
        return {"path": path, "tool": tool, "rows": [], "error": done.stderr.strip()[-500:] or "cuobjdump failed"}
    rows = parse_resource_usage(done.stdout)
    names = _demangle(sorted({str(r["kernel"]) for r in rows}))
    for r in rows:
        r["name"] = names[str(r["kernel"])]
    if not rows:
        return {"path": path, "tool": tool, "rows": [], "error": "no CUDA kernels in the extension (a CPU-only build)"}
    return {"path": path, "tool": tool, "rows": rows}


def run(
    *,
    shapes: Sequence[tuple[int, ...]],
    dtype: torch.dtype,
    norms: Sequence[str],
    op_names: Sequence[str],
    archs: Sequence[int] | None = None,
    jobs: int | None = None,
) -> dict[str, object]:
    """Compiles (never runs) what the ops suite would launch for these arguments; see the module docstring. The
    compiles run in a child process (Triton's interpreter, if on here, cannot compile)."""
    from rft_fast.kernels import aot

    archs = tuple(archs or aot.ARCHS)
    spec = {
        "dtypes": [str(dtype).removeprefix("torch.")],
        "row_sizes": sorted({int(torch.Size(s[1:]).numel()) for s in shapes}),
        "rows": sorted({s[0] for s in shapes}),
        "class_counts": [],
        "norms": list(norms),
        "ops": list(op_names),
    }
    meta = environment(torch.device("cpu"), " ".join(sys.argv))
    meta.update(device=", ".join(f"sm_{a}" for a in archs) + " (compiled ahead of time, no GPU used)", dry=True)
    return {"meta": meta, "triton": aot.compile_isolated(spec, archs=archs, jobs=jobs), "cuda": cuda_resources()}


def format_table(result: dict[str, object]) -> str:
    """The Triton table, the CUDA table and the gathers to replace, as text."""
    from rft_fast.kernels import aot

    meta = result["meta"]
    lines = [f"dry run: {meta['device']}  torch {meta['torch']}  triton {meta['triton']}", ""]
    lines += ["Triton kernels (rft_fast.kernels)", aot.format_rows(aot.COLUMNS, aot.table_rows(result["triton"]))]
    cuda = result["cuda"]
    lines += ["", f"CUDA kernels ({cuda['path']}, {cuda['tool']})"]
    if cuda.get("error"):
        lines.append(f"  not reported: {cuda['error']}")
    else:
        header = ("kernel", "arch", "regs", "stack", "smem", "local")
        rows = [
            [str(r["name"]), str(r["arch"]), *(str(r.get(k, "-")) for k in ("REG", "STACK", "SHARED", "LOCAL"))]
            for r in cuda["rows"]
        ]
        lines.append(aot.format_rows(header, rows))
    gathers = sorted({g for r in result["triton"] for g in r["gathers"]})
    spills = [r for r in result["triton"] if r["spill_stores"] or r["spill_loads"]]
    lines += ["", "per-row values loaded per element (a per-row load would do): " + (", ".join(gathers) or "none")]
    lines.append(f"kernels that spill registers: {len(spills)}")
    return "\n".join(lines)
