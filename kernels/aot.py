"""Ahead-of-time compiles of the Triton kernels for CUDA targets, on any machine (no GPU needed).

Which variants: the launchers themselves say. `variants()` calls the public entry points (kernels/__init__.py:
project, pgd_step, apgd_step for every norm of NORM_MODULES; kl_forward, kl_backward with and without labels and
grad_clean) on meta tensors over row sizes, batch sizes and ROW_DTYPES, with every kernel's `run` replaced by a
recorder. Each recorded launch (its arguments, constexprs and num_warps, as utils.py's settings chose them) is
specialized the way Triton's JIT specializes a launch (its own binder: a 16-byte aligned pointer gets
tt.divisibility 16, an int is specialized by value), and launches the JIT would share one binary are one variant.
So a new norm, kernel, constexpr or launch rule shows up here without an edit.

Row sizes: every constexpr and specialization is a function of next_power_of_2(D) (capped by utils.py),
next_power_of_2(chunks), D == 1 and D % 16 == 0, so D in {2^k, 2^k - 1} meets every variant a row of up to
2^MAX_LOG2 columns can launch (the "full" subset, about a thousand binaries per arch); "study" takes the study's
image sizes and class counts (every kernel and constexpr value at its largest BLOCK, about 50 per arch).

`compile_variant` runs triton.compile for GPUTarget("cuda", arch, 32) and reads what the binary does: registers
and spills (ptxas -v, which Triton runs), shared memory (metadata), the global loads and stores of the PTX by
width (ld.global.v4 = 128 bits), and from the TTIR the per-row tensors (eps, step, ...: 1-D arguments) that are
loaded as a tensor, i.e. gathered per element where one load per row would do.
Under Triton's interpreter (TRITON_INTERPRET=1, the CPU tests) @triton.jit gives Python runners, triton.language's
own helpers (tl.max, ...) included, so nothing compiles in that process: `package()` imports a private copy of this
package with the interpreter off (enough to record launches), and `compile_isolated` compiles in a child process.

    python -m kernels.aot --subset full --json ptx.json      # every variant, sm_80 and sm_90, all cores
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import torch

ARCHS = (80, 90)
MAX_LOG2 = 20  # rows of up to 2^20 columns (3 x 512 x 512 images: 786,432)
FULL_ROW_SIZES = tuple(sorted({2**k for k in range(MAX_LOG2 + 1)} | {2**k - 1 for k in range(2, MAX_LOG2 + 1)}))
# Batch sizes: Linf's flat numel = N * D is specialized too (== 1, % 16, and int64 past 2^31 elements).
FULL_ROWS = (1, 16, 4096)
# Classes of the KL kernels: the row loop's BLOCK caps at 4096 (utils.MAX_ROW_BLOCK), so 2^14 reaches the looped path.
FULL_CLASS_COUNTS = tuple(sorted({2**k for k in range(1, 15)} | {2**k - 1 for k in range(2, 15)}))
# The study: its images (CIFAR 3x32x32: one L2 chunk; ImageNet 3x224x224: many), a batch that keeps numel
# 16-aligned, and class counts (10, 1000; 4096: the longest row the KL backward holds in registers; ImageNet-21k:
# the looped path). Every kernel and every constexpr flag value occurs at its largest BLOCK.
STUDY_ROW_SIZES = (3 * 32 * 32, 3 * 224 * 224)
STUDY_ROWS = (16,)
STUDY_CLASS_COUNTS = (10, 1000, 4096, 21843)

_PER_ELEMENT = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)*)\s")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass
class Variant:
    """One binary the launchers can start: a kernel with recorded arguments, and the launches that reach it."""

    kernel: object  # triton JITFunction
    args: tuple
    kwargs: dict
    dtype: str
    ops: list[str] = field(default_factory=list)  # e.g. "apgd_step L2 D=150528 N=16"

    @property
    def name(self) -> str:
        return self.kernel.__name__

    def constexprs(self) -> dict[str, object]:
        """The constexpr arguments (and num_warps) the launcher passed."""
        names = [p.name for p in self.kernel.params if p.is_constexpr]
        return {k: getattr(v, "value", v) for k, v in self.kwargs.items() if k in names or k == "num_warps"}

    def argument_roles(self) -> tuple[list[str], list[str]]:
        """(per-row tensor arguments: 1-D, e.g. eps; streamed row tensors: 2-D) by parameter name."""
        per_row, streamed = [], []
        for p, a in zip(self.kernel.params, self.args):
            if isinstance(a, torch.Tensor):
                (per_row if a.dim() == 1 else streamed if a.dim() == 2 else []).append(p.name)
        return per_row, streamed


@dataclass
class KernelReport:
    """What one variant compiles to for one arch."""

    kernel: str
    arch: str
    dtype: str
    constexprs: dict[str, object]
    ops: list[str]
    registers: int
    shared_bytes: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int
    # Global memory instructions in the PTX by vector width: {"1": n, "2": n, "4": n} (loops counted once).
    loads: dict[str, int]
    stores: dict[str, int]
    # 2-D row tensors the kernel loads / stores as tensors (the streamed data).
    streamed_loads: list[str]
    streamed_stores: list[str]
    # Per-row tensors loaded per element ("eps_ptr at kernels/linf.py:78"): one load per row would do.
    gathers: list[str]


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """os.environ with these values for a while (Triton reads its knobs from there at each use)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.update({k: v})


@contextlib.contextmanager
def _interpreter_off() -> Iterator[None]:
    """Triton's interpreter off for a while (TRITON_INTERPRET=1 in the CPU tests): @triton.jit makes JITFunctions
    and the code generator compiles them."""
    from triton import knobs

    saved = knobs.runtime.__dict__.pop("interpret", None)
    try:
        with _environment(TRITON_INTERPRET="0"):
            yield
    finally:
        if saved is not None:
            knobs.runtime.__dict__["interpret"] = saved


def package() -> ModuleType:
    """This package with compilable kernels: itself, or, when it was imported under Triton's interpreter (whose
    @triton.jit gives Python runners), a private copy of it imported with the interpreter off."""
    from triton.runtime.jit import JITFunction

    own = sys.modules[__package__]
    if isinstance(own.linf._linf_step_kernel, JITFunction):
        return own
    name = f"_{__package__.replace('.', '_')}_compilable"
    if name not in sys.modules:
        folder = Path(__file__).parent
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            with _interpreter_off():
                spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _jit_functions(pkg: ModuleType) -> list[object]:
    from triton.runtime.jit import JITFunction

    modules = [*pkg.NORM_MODULES.values(), pkg.kl]
    found = {id(v): v for m in modules for v in vars(m).values() if isinstance(v, JITFunction)}
    return list(found.values())  # helpers such as _finite are imported into several modules


@contextlib.contextmanager
def _recording(pkg: ModuleType, log: list[tuple[object, tuple, dict]]) -> Iterator[None]:
    """Every `kernel[grid](...)` of pkg's kernel modules appends (kernel, args, kwargs) to log instead of running."""
    kernels = _jit_functions(pkg)
    for k in kernels:
        k.run = lambda *args, grid, warmup, _k=k, **kwargs: log.append((_k, args, kwargs))
    try:
        yield
    finally:
        for k in kernels:
            del k.run


def _launches(
    dtypes: Sequence[torch.dtype],
    row_sizes: Sequence[int],
    rows: Sequence[int],
    class_counts: Sequence[int],
    norms: Sequence[str] | None,
    ops: Sequence[str],
) -> Iterator[tuple[str, torch.dtype, list]]:
    """(op label, dtype, recorded launches) for the public entry points over the sizes, on meta tensors."""
    pkg = package()
    meta = torch.device("meta")
    for dtype in dtypes:
        for n in rows:
            for d in row_sizes:
                t = [torch.empty((n, d), dtype=dtype, device=meta) for _ in range(6)]
                per_row = torch.empty(n, dtype=torch.float32, device=meta)
                keep = torch.empty(n, dtype=torch.int64, device=meta)
                for norm in pkg.NORM_MODULES if norms is None else norms:
                    arguments = {
                        "project": (t[0], t[1], t[2], per_row, norm),
                        "pgd_step": (t[0], t[1], t[2], t[3], per_row, per_row, norm, keep),
                        "apgd_step": (t[0], t[1], t[2], t[3], t[4], t[5], per_row, per_row, norm, 0.75, keep),
                    }
                    for op in ops:
                        log: list = []
                        with _recording(pkg, log):
                            getattr(pkg, op)(*arguments[op])
                        yield f"{op} {norm} D={d} N={n}", dtype, log
        for c in class_counts:
            n = rows[0]
            adv, clean, g_adv, g_clean = (torch.empty((n, c), dtype=dtype, device=meta) for _ in range(4))
            y = torch.empty(n, dtype=torch.int64, device=meta)
            weight = torch.empty(n, dtype=torch.float32, device=meta)
            stats = torch.empty((n, 3), dtype=torch.float32, device=meta)
            for labels in (None, y):
                tag = f"C={c} y={'yes' if labels is not None else 'no'}"
                log = []
                with _recording(pkg, log):
                    pkg.kl_forward(adv, clean, labels, 6.0)
                yield f"kl_forward {tag}", dtype, log
                for grad_clean in (None, g_clean):
                    log = []
                    with _recording(pkg, log):
                        pkg.kl_backward(weight, adv, clean, labels, 6.0, stats, g_adv, grad_clean)
                    yield f"kl_backward {tag} grad_clean={'yes' if grad_clean is not None else 'no'}", dtype, log


def _binder_key(backend: object, kernel: object, args: tuple, kwargs: dict) -> tuple:
    """What Triton's JIT caches a launch's binary under (its own binder): specialization and options."""
    from triton.runtime.jit import create_function_from_signature

    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    _, specialization, options = binder(*args, **kwargs)
    return kernel.__name__, str(specialization), str(sorted(options.items()))


STEP_OPS = ("project", "pgd_step", "apgd_step")


def variants(
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    row_sizes: Sequence[int] = FULL_ROW_SIZES,
    rows: Sequence[int] = FULL_ROWS,
    class_counts: Sequence[int] = FULL_CLASS_COUNTS,
    norms: Sequence[str] | None = None,
    ops: Sequence[str] = STEP_OPS,
) -> list[Variant]:
    """Every distinct binary the launchers start for these sizes (default: the full set), in launch order:
    `ops` of `norms` (default: every norm of NORM_MODULES) over rows x row_sizes, the KL kernels over class_counts."""
    unknown = [op for op in ops if op not in STEP_OPS]
    if unknown:
        raise ValueError(f"ops must be among {STEP_OPS}, got {unknown}")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    from .utils import ROW_DTYPES

    backend = make_backend(GPUTarget("cuda", ARCHS[-1], 32))
    found: dict[tuple, Variant] = {}
    for label, dtype, log in _launches(dtypes or ROW_DTYPES, row_sizes, rows, class_counts, norms, ops):
        for kernel, args, kwargs in log:
            key = _binder_key(backend, kernel, args, kwargs)
            v = found.setdefault(key, Variant(kernel, args, kwargs, _DTYPE_NAMES[dtype]))
            v.ops.append(label)
    return list(found.values())


def study_variants() -> list[Variant]:
    """The binaries the study's shapes launch (STUDY_ROW_SIZES, STUDY_CLASS_COUNTS), every dtype."""
    return variants(row_sizes=STUDY_ROW_SIZES, rows=STUDY_ROWS, class_counts=STUDY_CLASS_COUNTS)


# ----------------------------------------------------------------------------------------------- compiling


def _memory_ops(ptx: str) -> tuple[dict[str, int], dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"ld": {}, "st": {}}
    for op, suffix in _PER_ELEMENT.findall(ptx):
        width = next((w for w in ("8", "4", "2") if f".v{w}" in suffix), "1")
        counts[op][width] = counts[op].get(width, 0) + 1
    return counts["ld"], counts["st"]


def _loc_resolver(ir: str, root: Path):
    """#locN -> "file:line" (relative to root) from an MLIR module's location aliases."""
    defs = dict(re.findall(r"^(#loc\d*) = (.*)$", ir, flags=re.M))

    def resolve(ref: str, depth: int = 0) -> str:
        text = defs.get(ref, "")
        m = re.search(r'"([^"]+\.py)":(\d+):\d+', text)
        if m:
            path = Path(m.group(1))
            with contextlib.suppress(ValueError):
                path = path.resolve().relative_to(root)
            return f"{path}:{m.group(2)}"
        inner = re.search(r"#loc\d*", text)
        return resolve(inner.group(0), depth + 1) if inner and depth < 20 else "?"

    return resolve


def _tensor_accesses(ttir: str, per_row: list[str], streamed: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(per-row gathers with their source line, streamed args loaded, streamed args stored) from the TTIR: follows
    each pointer argument through splat / addptr / broadcast to the tensor loads and stores that use it."""
    root = Path(__file__).resolve().parent.parent
    resolve = _loc_resolver(ttir, root)
    origin = {f"%{a}": a for a in (*per_row, *streamed)}
    gathers, loaded, stored = [], set(), set()
    derive = re.compile(r"^\s*(%[\w.#]+) = tt\.(?:splat|addptr|broadcast|expand_dims|reshape) (%[\w.#]+)")
    access = re.compile(r"tt\.(load|store) (%[\w.#]+)[ ,].*?: tensor<.*loc\((#loc\d*)\)")
    for line in ttir.splitlines():
        m = derive.match(line)
        if m and m.group(2) in origin:
            origin[m.group(1)] = origin[m.group(2)]
            continue
        m = access.search(line)
        if m and m.group(2) in origin:
            arg = origin[m.group(2)]
            if arg in per_row and m.group(1) == "load":
                gathers.append(f"{arg} at {resolve(m.group(3))}")
            elif arg in streamed:
                (loaded if m.group(1) == "load" else stored).add(arg)
    return sorted(set(gathers)), sorted(loaded), sorted(stored)


def compile_variant(v: Variant, arch: int) -> KernelReport:
    """triton.compile of one variant for sm_<arch>, and what its binary does (see KernelReport)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    if knobs.runtime.interpret:
        raise RuntimeError("Triton's interpreter is on (TRITON_INTERPRET=1): compile with compile_isolated()")
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kernel = v.kernel
    kwargs = dict(v.kwargs, debug=kernel.debug or knobs.runtime.debug)  # as JITFunction.run
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*v.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    log = io.StringIO()
    # Compiled afresh (a cached binary comes without ptxas's log), which Triton prints with TRITON_DUMP_PTXAS_LOG.
    with _environment(TRITON_ALWAYS_COMPILE="1", TRITON_DUMP_PTXAS_LOG="1"):
        with contextlib.redirect_stdout(log):
            source = ASTSource(kernel, signature, constexprs, attrs)
            compiled = triton.compile(source, target=target, options=options.__dict__)
    spills = _SPILLS.search(log.getvalue())
    registers = _REGISTERS.search(log.getvalue())
    if not spills or not registers:
        raise RuntimeError(f"no ptxas -v log in Triton's output for {v.name}: {log.getvalue()[-2000:]!r}")
    loads, stores = _memory_ops(compiled.asm["ptx"])
    gathers, streamed_loads, streamed_stores = _tensor_accesses(compiled.asm["ttir"], *v.argument_roles())
    return KernelReport(
        kernel=v.name,
        arch=f"sm_{arch}",
        dtype=v.dtype,
        constexprs=v.constexprs(),
        ops=v.ops,
        registers=int(registers.group(1)),
        shared_bytes=int(compiled.metadata.shared),
        stack_bytes=int(spills.group(1)),
        spill_stores=int(spills.group(2)),
        spill_loads=int(spills.group(3)),
        loads=loads,
        stores=stores,
        streamed_loads=streamed_loads,
        streamed_stores=streamed_stores,
        gathers=gathers,
    )


_POOL: list[Variant] = []


def _compile_job(job: tuple[int, int]) -> dict:
    return asdict(compile_variant(_POOL[job[0]], job[1]))


def compile_all(
    vs: Sequence[Variant], archs: Sequence[int] = ARCHS, jobs: int | None = None, picks: Sequence[tuple[int, int]] = ()
) -> list[dict]:
    """compile_variant for every variant x arch, or only the (index into vs, arch) picks, as dicts, in `jobs`
    processes (default: the cores)."""
    todo = list(picks) or [(i, a) for a in archs for i in range(len(vs))]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    _POOL[:] = vs
    try:
        if jobs == 1:
            return [_compile_job(j) for j in todo]
        # fork: the workers inherit the recorded variants (meta tensors, kernel objects) as they are.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_compile_job, todo))
    finally:
        _POOL.clear()


SUBSETS = {"study": study_variants, "full": variants}


def select(spec: Mapping[str, object]) -> list[Variant]:
    """The variants of a JSON-able spec: {"subset": "study" | "full"}, or variants()'s keyword arguments with
    dtypes by name ({"dtypes": ["float32"], "row_sizes": [3072], "rows": [16], "class_counts": [], ...})."""
    spec = dict(spec)
    if "subset" in spec:
        if spec["subset"] not in SUBSETS or len(spec) > 1:
            raise ValueError(f"spec: {{'subset': one of {tuple(SUBSETS)}}} alone, got {spec}")
        return SUBSETS[spec["subset"]]()
    if "dtypes" in spec:
        names = {n: d for d, n in _DTYPE_NAMES.items()}
        unknown = [d for d in spec["dtypes"] if d not in names]
        if unknown:
            raise ValueError(f"spec dtypes must be among {tuple(names)}, got {unknown}")
        spec["dtypes"] = [names[d] for d in spec["dtypes"]]
    return variants(**spec)


def compile_isolated(
    spec: Mapping[str, object],
    picks: Sequence[tuple[int, int]] = (),
    archs: Sequence[int] = ARCHS,
    jobs: int | None = None,
) -> list[dict]:
    """compile_all of select(spec) (or of its picks: index, arch) in a child process without Triton's interpreter
    (see the module docstring); the child enumerates the same variants, so the indices agree."""
    select(spec)  # bad specs fail here, with their message
    with tempfile.TemporaryDirectory(prefix="rft-aot-") as out:
        path = Path(out) / "reports.json"
        cmd = [sys.executable, "-m", __name__, "--spec", json.dumps(dict(spec)), "--json", str(path), "--quiet"]
        cmd += ["--arch", *map(str, archs)] + [f"--pick={i}:{a}" for i, a in picks]
        cmd += [f"--jobs={jobs}"] if jobs else []
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        top = str(Path(__file__).parents[__name__.count(".")])  # where this module's top package imports from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (top, env.get("PYTHONPATH")) if p)
        # cwd: `-m` puts the working directory first on sys.path, and a source checkout there would shadow `top`
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(path.read_text())


COLUMNS = ("kernel", "arch", "dtype", "constexprs", "regs", "smem", "spill", "ld v4/v2/1", "st v4/v2/1", "gathers")


def table_rows(reports: Sequence[dict]) -> list[list[str]]:
    """One row of strings per report, in COLUMNS order."""

    def widths(counts: dict[str, int]) -> str:
        return "/".join(str(counts.get(w, 0)) for w in ("4", "2", "1"))

    return [
        [
            r["kernel"],
            r["arch"],
            r["dtype"],
            " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in r["constexprs"].items()),
            str(r["registers"]),
            str(r["shared_bytes"]),
            f"{r['spill_stores']}/{r['spill_loads']}",
            widths(r["loads"]),
            widths(r["stores"]),
            ", ".join(r["gathers"]) or "-",
        ]
        for r in reports
    ]


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A left-aligned fixed-width text table."""
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(n) for h, n in zip(header, w)).rstrip()]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(c.ljust(n) for c, n in zip(r, w)).rstrip() for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels.aot", description=__doc__.split("\n")[0])
    p.add_argument("--subset", choices=sorted(SUBSETS), default="study")
    p.add_argument("--spec", type=json.loads, help="JSON: the variants to compile (select()); overrides --subset")
    p.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities (default 80 90)")
    p.add_argument("--jobs", type=int, default=None, help="compile processes (default: the cores)")
    p.add_argument("--json", help="write the reports here")
    p.add_argument("--quiet", action="store_true", help="no table")
    p.add_argument("--pick", action="append", default=[], help="INDEX:ARCH, only these (compile_isolated)")
    args = p.parse_args(argv)
    if any(a < 70 or a >= 100 for a in args.arch):
        p.error(f"--arch takes compute capabilities 70..99 (ptxas of Triton's nvidia backend), got {args.arch}")
    picks = [tuple(map(int, p.split(":"))) for p in args.pick]
    reports = compile_all(select(args.spec or {"subset": args.subset}), args.arch, args.jobs, picks)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1) + "\n")
    if not args.quiet:
        print(format_rows(COLUMNS, table_rows(reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
