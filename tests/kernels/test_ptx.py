"""The Triton kernels compiled ahead of time (rft_fast.kernels.aot), as the JIT compiles them for 16-byte aligned
tensors: the elementwise kernels stream with 128-bit loads and stores, and no kernel spills registers.

CI compiles a subset (15 binaries, in one child process; the full ~2,000 take minutes on 16 cores: `python -m
kernels.aot --subset full`, docs/benchmarks.md "PTX checks"): the Linf kernels for float32 and bfloat16 (the two
vector widths per thread) on sm_90, APGD's on sm_80 too, and for the spill check each kernel's study variant with
the most live values (largest BLOCK, every constexpr flag on), float32, on sm_90 (the bench's GPU).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from rft_fast.bench.ops_bench import TRAFFIC
from rft_fast.bench.ptx_report import cuda_resources, extension_path, find_cuobjdump, parse_resource_usage
from rft_fast.kernels import aot

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def study() -> list[aot.Variant]:
    return aot.study_variants()


def compiled(index: int, arch: int) -> dict:
    return _all_compiled()[index, arch]


@functools.cache
def _all_compiled() -> dict[tuple[int, int], dict]:
    """Every binary the tests below read, compiled at once in one child process (its cores in parallel)."""
    picks = sorted(
        {(_index(*c[:2], **c[2]), c[-1]) for c in STREAM_CASES} | {(_most_live(k), a) for k, a in SPILL_CASES}
    )
    picks += [(_index("_linf_step_kernel", "float32", APGD=True), 90)]
    picks = sorted(set(picks))
    reports = aot.compile_isolated({"subset": "study"}, picks)
    return dict(zip(picks, reports))


def _index(name: str, dtype: str, **constexprs: object) -> int:
    found = [
        i
        for i, v in enumerate(study())
        if v.name == name and v.dtype == dtype and all(v.constexprs().get(k) == c for k, c in constexprs.items())
    ]
    assert len(found) >= 1, (name, dtype, constexprs)
    return found[0]


def test_variants_cover_every_launched_kernel_and_flag() -> None:
    vs = study()
    pkg = aot.package()
    kernels = {f.__name__ for f in aot._jit_functions(pkg) if f.__name__.endswith("_kernel")}
    assert {v.name for v in vs} == kernels
    labels = {" ".join(op.split()[:2]) for v in vs for op in v.ops}
    assert {f"{op} {norm}" for op in aot.STEP_OPS for norm in pkg.NORM_MODULES} <= labels
    values: dict[tuple[str, str], set] = {}
    for v in vs:
        for k, c in v.constexprs().items():
            values.setdefault((v.name, k), set()).add(c)
    for flag in [("_linf_step_kernel", "APGD"), ("_l2_step_kernel", "APGD"), ("_kl_bwd_kernel", "ONE_BLOCK")]:
        assert values[flag] == {False, True}, flag
    assert values[("_l1_kernel", "STAGE")] == {0, 1, 2}
    assert values[("_l2_step_kernel", "CHUNKS_P2")] == {1, 64}  # CIFAR rows fit one chunk, ImageNet rows take 37
    assert {v.dtype for v in vs} == {"float32", "bfloat16", "float16"}


def test_full_set_meets_every_block_size() -> None:
    """The full set's row sizes reach every BLOCK the launchers' settings return (utils.py)."""
    from rft_fast.kernels import utils

    blocks: dict[str, set] = {}
    for v in aot.variants(dtypes=(torch.float32,), rows=(1,), class_counts=(2, 3, 4096, 4097)):
        blocks.setdefault(v.name, set()).add(v.constexprs().get("BLOCK"))
    assert blocks["_l1_kernel"] == {2**k for k in range(11)} == {utils.search_settings(2**k)[0] for k in range(21)}
    assert blocks["_l2_step_kernel"] == {utils.chunk_settings(2**k)[0] for k in range(21)}
    assert max(blocks["_kl_bwd_kernel"]) == utils.MAX_ROW_BLOCK


LINF = [("_linf_project_kernel", {}, "project"), ("_linf_step_kernel", {"APGD": False}, "pgd_step")]
LINF.append(("_linf_step_kernel", {"APGD": True}, "apgd_step"))


# (kernel, dtype, flags, op, arch)
STREAM_CASES = [(k, d, f, op, 90) for k, f, op in LINF for d in ("float32", "bfloat16")]
STREAM_CASES.append((LINF[2][0], "float32", LINF[2][1], LINF[2][2], 80))


@pytest.mark.parametrize("kernel,dtype,flags,op,arch", STREAM_CASES)
def test_elementwise_kernels_stream_128_bit(kernel: str, dtype: str, flags: dict, op: str, arch: int) -> None:
    i = _index(kernel, dtype, **flags)
    v, r = study()[i], compiled(i, arch)
    # The streamed (N, D) tensors: what the op reads and writes by the bench's traffic table.
    assert (len(r["streamed_loads"]), len(r["streamed_stores"])) == TRAFFIC[op]
    per_thread = v.constexprs()["BLOCK"] // (32 * v.constexprs()["num_warps"])
    vectors = per_thread * torch.empty((), dtype=getattr(torch, dtype)).element_size() // 16
    assert vectors >= 1
    assert r["loads"].get("4", 0) == len(r["streamed_loads"]) * vectors
    assert r["stores"] == {"4": len(r["streamed_stores"]) * vectors}


def _most_live(name: str) -> int:
    """The float32 study variant of `name` with the largest BLOCK, then the most flags on (APGD, STAGE, HAS_Y...)."""

    def weight(i: int) -> tuple:
        c = study()[i].constexprs()
        return c.get("BLOCK", 0), sum(bool(x) for k, x in c.items() if k.isupper() and k not in ("BLOCK", "K"))

    return max((i for i, v in enumerate(study()) if v.name == name and v.dtype == "float32"), key=weight)


SPILL_CASES = [(name, 90) for name in sorted({v.name for v in study()})]


@pytest.mark.parametrize("kernel,arch", SPILL_CASES)
def test_no_kernel_spills_registers(kernel: str, arch: int) -> None:
    r = compiled(_most_live(kernel), arch)
    assert r["registers"] > 0
    assert (r["spill_stores"], r["spill_loads"]) == (0, 0), r


def test_gathers_point_at_their_loads() -> None:
    """A per-row tensor loaded per element is reported with the line of its tl.load; a scalar per-row load is not."""
    linf = compiled(_index("_linf_step_kernel", "float32", APGD=True), 90)
    for g in linf["gathers"]:
        arg, where = g.split(" at ")
        path, line = where.rsplit(":", 1)
        assert f"tl.load({arg}" in (ROOT / path).read_text().splitlines()[int(line) - 1]
    l2 = compiled(_most_live("_l2_step_kernel"), 90)  # eps / step: one load per program
    assert l2["gathers"] == [] and set(l2["streamed_loads"]) == {"x_adv_ptr", "x_ptr", "grad_ptr", "x_prev_ptr"}


SAMPLE = """
Fatbin elf code:
arch = sm_90
Resource usage:
 Function _Z3fooPf:
  REG:40 STACK:8 SHARED:1200 LOCAL:0 CONSTANT[0]:400 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_resource_usage_parser() -> None:
    (row,) = parse_resource_usage(SAMPLE)
    assert row["arch"] == "sm_90" and row["kernel"] == "_Z3fooPf"
    assert (row["REG"], row["STACK"], row["SHARED"], row["LOCAL"]) == (40, 8, 1200, 0)


@pytest.mark.skipif(not (extension_path() and find_cuobjdump()), reason="needs the built extension and cuobjdump")
def test_cuda_extension_resources() -> None:
    report = cuda_resources()
    if report.get("error"):
        pytest.skip(report["error"])  # a CPU-only build has no CUDA kernels
    names = {str(r["name"]).split("<")[0] for r in report["rows"]}
    assert {"linf_step_kernel", "l2_step_kernel", "l1_kernel"} <= names
    assert all(r["REG"] > 0 for r in report["rows"])
