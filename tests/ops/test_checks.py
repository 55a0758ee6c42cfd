"""check=True on the kernel backends: the kernels flag bad data in their own pass (one int32 flag, read once per
call), and only a set flag runs the data checks, which raise the message they always raised. Every backend gives
the same message for NaN / Inf in each tensor, x outside [0, 1] and bad per-sample tensors; a clean input raises
nothing and gives the bits of check=False. (The Triton interpreter is slow, L1 above all: it runs a subset.)"""

from __future__ import annotations

import re

import pytest
import torch
from helpers import make_inputs, use_backend

from rft_fast import ops
from rft_fast.ops import arguments, dispatch

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NaNs
NAN, INF = float("nan"), float("inf")
NORMS = ("Linf", "L2", "L1")
OPS = ("project", "pgd_step", "apgd_step")
# (shape, memory format, dtype): channels_last bf16 with sizes no block divides; batch 1 with an odd length.
DATA_CASES = (((2, 3, 5, 7), torch.channels_last, torch.bfloat16), ((1, 37), torch.contiguous_format, torch.float32))
# Bad input -> (argument, value put in the last sample, the message today's checks raise).
CASES = {
    "x_adv_nan": ("x_adv", NAN, r"^x_adv contains NaN or Inf values$"),
    "x_inf": ("x", INF, r"^x contains NaN or Inf values$"),
    "grad_ninf": ("grad", -INF, r"^grad contains NaN or Inf values$"),
    "x_prev_nan": ("x_prev", NAN, r"^x_prev contains NaN or Inf values$"),
    "x_above": ("x", 1.5, r"^x must lie in \[0, 1\] \(images as pixels\), got values in \[.*, 1\.5\]$"),
    "x_below": ("x", -0.25, r"^x must lie in \[0, 1\] \(images as pixels\), got values in \[-0\.25, .*\]$"),
    "eps": ("eps", -0.1, r"^eps must be > 0 and finite, got \[-0\.1"),
    "step": ("step_size", NAN, r"^step_size must be > 0 and finite, got \[nan\]$"),
    "sparsity": ("l1_sparsity", 1.5, r"^l1_sparsity must be in \(0, 1\.0\], got \[1\.5\]$"),
}
READS = {
    "project": ("x_adv", "x", "eps"),
    "pgd_step": ("x_adv", "x", "grad", "eps", "step_size", "l1_sparsity"),
    "apgd_step": ("x_adv", "x", "grad", "x_prev", "eps", "step_size", "l1_sparsity"),
}
# The interpreted Triton subset: (op, norm, data case index, case), each case once per norm.
TRITON_BAD = (
    ("project", "Linf", 0, "x_above"),
    ("pgd_step", "Linf", 0, "grad_ninf"),
    ("apgd_step", "Linf", 1, "x_prev_nan"),
    ("pgd_step", "L2", 1, "sparsity"),
    ("apgd_step", "L2", 0, "x_below"),
    ("project", "L2", 1, "eps"),
    ("project", "L1", 1, "x_inf"),
)
TRITON_CLEAN = (("pgd_step", "Linf", 0), ("apgd_step", "Linf", 1), ("apgd_step", "L2", 0), ("pgd_step", "L2", 1))


def _inputs(shape, fmt, dtype, seed=0) -> dict[str, object]:
    raw = make_inputs(shape, seed=seed)
    t = {k: raw[k].to(dtype) for k in ("x_adv", "x_prev", "x", "grad")}
    t = {k: v.contiguous(memory_format=fmt) if v.dim() == 4 else v for k, v in t.items()}
    n = shape[0]
    t.update(eps=torch.full((n,), 0.3), step_size=torch.full((n,), 0.05), l1_sparsity=torch.full((n,), 0.4))
    return t


def _call(op: str, norm: str, backend: str, t: dict[str, object], check: bool = True) -> tuple[torch.Tensor, ...]:
    kw = dict(backend=backend, check=check)
    if op == "project":
        return (ops.project(t["x_adv"], t["x"], t["eps"], norm, **kw),)
    steps = dict(l1_sparsity=t["l1_sparsity"], **kw)
    if op == "pgd_step":
        return (ops.pgd_step(t["x_adv"], t["x"], t["grad"], t["step_size"], t["eps"], norm, **steps),)
    return ops.apgd_step(t["x_adv"], t["x_prev"], t["x"], t["grad"], t["step_size"], t["eps"], norm, **steps)


def _message(op: str, norm: str, backend: str, t: dict[str, object]) -> str:
    with pytest.raises(ValueError) as err:
        _call(op, norm, backend, t)
    return str(err.value)


def _bad_cases():
    for op in OPS:
        for case, (name, _, _) in CASES.items():
            if name in READS[op]:
                yield op, case


def _assert_bad_raises_todays_message(op: str, norm: str, backend: str, data: int, case: str) -> None:
    t = _inputs(*DATA_CASES[data])
    _set_bad(t, case)
    got = _message(op, norm, backend, t)
    # The torch backend runs the data checks before the call, as every backend did before the flag.
    assert got == _message(op, norm, "torch", t)
    assert re.search(CASES[case][2], got), got


def _set_bad(t: dict[str, object], case: str) -> None:
    name, value, _ = CASES[case]
    target = t[name]
    if target.dim() == 1:
        target[-1] = value
    else:
        last = target[-1]
        index = tuple(s // 2 for s in last.shape)
        last[index] = value


@pytest.mark.parametrize("data", range(len(DATA_CASES)))
@pytest.mark.parametrize("op,case", tuple(_bad_cases()))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("backend", ("cpp", "torch"))
def test_bad_data_raises_todays_message(backend, norm, op, case, data):
    _assert_bad_raises_todays_message(op, norm, use_backend(backend), data, case)


@pytest.mark.parametrize("op,norm,data,case", TRITON_BAD)
def test_bad_data_raises_todays_message_triton(op, norm, data, case):
    _assert_bad_raises_todays_message(op, norm, use_backend("triton"), data, case)


def _assert_clean_is_unchanged(op: str, norm: str, backend: str, data: int) -> None:
    t = _inputs(*DATA_CASES[data], seed=1)
    checked, unchecked = _call(op, norm, backend, t), _call(op, norm, backend, t, check=False)
    for a, b in zip(checked, unchecked):
        assert a.dtype == b.dtype and a.stride() == b.stride()
        assert torch.equal(a, b) and not a.isnan().any()


@pytest.mark.parametrize("data", range(len(DATA_CASES)))
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("backend", ("cpp", "torch"))
def test_clean_input_gives_the_unchecked_bits(backend, norm, op, data):
    _assert_clean_is_unchanged(op, norm, use_backend(backend), data)


@pytest.mark.parametrize("op,norm,data", TRITON_CLEAN)
def test_clean_input_gives_the_unchecked_bits_triton(op, norm, data):
    _assert_clean_is_unchanged(op, norm, use_backend("triton"), data)


# ---------------------------------------------------------------- the kernels' flag


def _kernel_flag(backend: str, norm: str, op: str, rows: dict[str, torch.Tensor], eps: torch.Tensor) -> int:
    """The bits a kernel ORs into a zeroed flag for (N, D) float32 rows."""
    flag = torch.zeros(1, dtype=torch.int32)
    fn, nid = dispatch.kernel(backend, op), dispatch.norm_arg(backend, norm)
    n, d = rows["x"].shape
    out, z = torch.empty_like(rows["x"]), torch.empty_like(rows["x"])
    step, keep = torch.full((n,), 0.05), torch.full((n,), max(1, d // 3), dtype=torch.int64)
    if op == "project":
        fn(out, rows["x_adv"], rows["x"], eps, nid, flag)
    elif op == "pgd_step":
        fn(out, rows["x_adv"], rows["x"], rows["grad"], step, eps, nid, keep, flag)
    else:
        fn(out, z, rows["x_adv"], rows["x_prev"], rows["x"], rows["grad"], step, eps, nid, 0.75, keep, flag)
    return int(flag.item())


FLAG_CASES = (  # (what, (argument, value) set in row 1, bits)
    ("clean", None, 0),
    ("minus zero x", ("x", -0.0), 0),
    ("x above", ("x", 1.0 + 2**-23), arguments.FLAG_X_RANGE),
    ("negative subnormal x", ("x", -1e-40), arguments.FLAG_X_RANGE),
    ("nan x", ("x", NAN), arguments.FLAG_BAD_NUMBER | arguments.FLAG_X_RANGE),
    ("inf x_adv", ("x_adv", INF), arguments.FLAG_BAD_NUMBER),
    ("nan grad", ("grad", NAN), arguments.FLAG_BAD_NUMBER),
    ("inf x_prev", ("x_prev", -INF), arguments.FLAG_BAD_NUMBER),
    ("zero eps", ("eps", 0.0), arguments.FLAG_BAD_NUMBER),
)


KERNEL_CASES = [("cpp", norm, op, FLAG_CASES) for norm in NORMS for op in OPS] + [
    ("triton", "Linf", "project", FLAG_CASES[1:4]),
    ("triton", "Linf", "apgd_step", FLAG_CASES[4:]),
    ("triton", "L2", "pgd_step", FLAG_CASES[:1] + FLAG_CASES[3:4] + FLAG_CASES[6:7]),
]


@pytest.mark.parametrize("backend,norm,op,cases", KERNEL_CASES, ids=[f"{b}-{n}-{o}" for b, n, o, _ in KERNEL_CASES])
def test_kernel_flag_bits(backend, norm, op, cases):
    """The documented bits (docs/kernels.md, "Data checks"): 1 where the bad-number rule fires for an output the
    call writes, 2 for an x entry outside [0, 1] tested as Python compares (-0 inside, -1e-40 outside)."""
    use_backend(backend)
    raw = make_inputs((3, 19), seed=2)
    base = {k: raw[k].float() for k in ("x_adv", "x_prev", "x", "grad")}
    base["eps"] = torch.full((3,), 0.3)
    reads = {"project": ("x_adv", "x", "eps")}.get(op, ("x_adv", "x", "grad", "eps")) + (
        ("x_prev",) if op == "apgd_step" else ()
    )
    for what, bad, bits in cases:
        t = {k: v.clone() for k, v in base.items()}
        if bad is not None:
            if bad[0] not in reads:
                continue
            t[bad[0]].view(-1)[t[bad[0]].shape[-1] + 7 if t[bad[0]].dim() == 2 else 1] = bad[1]
        eps = t.pop("eps")
        assert _kernel_flag(backend, norm, op, t, eps) == bits, what


def test_unchecked_calls_pass_no_flag(monkeypatch):
    """check=False passes None (no flag, no host sync); the default call passes a zeroed int32 (1,) flag."""
    seen = []
    real = dispatch.kernel

    def spy(backend, name):
        fn = real(backend, name)
        return lambda *args: (seen.append(args[-1]), fn(*args))[1]

    monkeypatch.setattr("rft_fast.ops.projection.kernel", spy)
    t = _inputs((2, 3, 4, 4), torch.contiguous_format, torch.float32)
    backend = next(b for b in ops.backends("cpu") if b != "torch")
    ops.pgd_step(t["x_adv"], t["x"], t["grad"], 0.1, 0.3, "Linf", backend=backend, check=False)
    ops.pgd_step(t["x_adv"], t["x"], t["grad"], 0.1, 0.3, "Linf", backend=backend)
    assert seen[0] is None
    assert seen[1].dtype == torch.int32 and seen[1].shape == (1,) and int(seen[1]) == 0


def test_flag_the_checks_cannot_explain_raises_a_clear_error():
    flag = torch.tensor([arguments.FLAG_X_RANGE], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"^pgd_step: the kernel reported bad input data \(x outside \[0, 1\]\)"):
        arguments.raise_if_flagged(flag, "pgd_step", lambda: None)
    arguments.raise_if_flagged(torch.zeros(1, dtype=torch.int32), "pgd_step", lambda: 1 / 0)  # clear: no checks
    arguments.raise_if_flagged(None, "pgd_step", lambda: 1 / 0)


def test_empty_batch_still_checks_per_sample_tensors():
    x = torch.rand(2, 0, 3)
    with pytest.raises(ValueError, match=r"eps must be > 0 and finite, got \[-1\.0\]"):
        ops.project(x, x, torch.tensor([0.1, -1.0]), "L2")


# ---------------------------------------------------------------- TRADES KL / objective


@pytest.mark.parametrize("backend", ("cpp", "triton"))
def test_trades_flag_raises_todays_message(backend):
    use_backend(backend)
    gen = torch.Generator().manual_seed(3)
    lc, la = torch.randn(3, 37, generator=gen), torch.randn(3, 37, generator=gen)
    y = torch.tensor([0, 5, 36])
    checked = ops.trades_objective(lc, la, y, 6.0, reduction="none", backend=backend)
    assert torch.equal(checked, ops.trades_objective(lc, la, y, 6.0, reduction="none", backend=backend, check=False))
    assert torch.equal(ops.trades_kl(la, lc, backend=backend), ops.trades_kl(la, lc, backend=backend, check=False))
    for name, value, objective in (("logits_adv", NAN, False), ("logits_clean", INF, True), ("logits_adv", -INF, True)):
        bad = {"logits_adv": la.clone(), "logits_clean": lc.clone()}
        bad[name][2, 30] = value
        messages = []
        for be in (backend, "torch"):
            with pytest.raises(ValueError, match=rf"^{name} contains NaN or Inf values$") as err:
                if objective:
                    ops.trades_objective(bad["logits_clean"], bad["logits_adv"], y, 1.0, backend=be)
                else:
                    ops.trades_kl(bad["logits_adv"], bad["logits_clean"], backend=be)
            messages.append(str(err.value))
        assert messages[0] == messages[1]
