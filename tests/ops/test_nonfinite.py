"""No bad number gets in. Every backend gives the same answer for NaN / Inf data and for bad per-sample eps /
step_size / l1_sparsity tensors with check=False (NaN exactly where the bad value feeds, rft_fast.reference's
rule), and for an empty batch; the attacks raise NonFiniteError on a model whose logits or input gradients are
not finite, and give the reference's points on a finite one."""

from __future__ import annotations

import pytest
import torch
from helpers import make_eps, make_inputs, use_backend
from torch import nn

from rft_fast import ops, reference
from rft_fast.attacks import APGD, FGSMRS, PGD, NonFiniteError

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NaNs
NORMS = ("Linf", "L2", "L1")
NAN, INF = float("nan"), float("inf")
ATOL = {torch.float32: 2e-5, torch.bfloat16: 2**-7 + 1e-6}
# Bad entries (input, value) per sample, each at its own random position: sample 0 stays good, sample 3's
# x_prev reaches x_next only. (The Triton interpreter takes about a second per L1 row: few, busy rows.)
BAD_ENTRIES = (
    (),
    (("grad", NAN), ("x_adv", -INF), ("x_adv", NAN)),
    (("x", NAN), ("grad", INF), ("grad", -INF)),
    (("x_prev", NAN),),
)
# (shape, memory format, dtype): channels_last bf16 with sizes no block divides; batch 1, flat, odd length.
DATA_CASES = (((4, 3, 5, 7), torch.channels_last, torch.bfloat16), ((1, 37), torch.contiguous_format, torch.float32))
# One bad per-sample value per sample, with check=False: (which, value); sparsity matters to the L1 steps only.
BAD_VALUES = (
    (None, None),
    ("eps", -0.1),
    ("eps", 0.0),
    ("eps", NAN),
    ("eps", INF),
    ("step", 0.0),
    ("step", NAN),
    ("sparsity", NAN),
)
# Which inputs each output reads, and which per-sample values.
READS = {
    "project": ("x_adv", "x"),
    "pgd_step": ("x_adv", "x", "grad"),
    "z": ("x_adv", "x", "grad"),
    "x_next": ("x_adv", "x", "grad", "x_prev"),
}
VALUES = {
    "project": ("eps",),
    "pgd_step": ("eps", "step", "sparsity"),
    "z": ("eps", "step", "sparsity"),
    "x_next": ("eps", "step", "sparsity"),
}


@pytest.fixture(params=("triton", "cpp", "torch"))
def backend(request: pytest.FixtureRequest) -> str:
    return use_backend(request.param)


def _cast(t: torch.Tensor, dtype: torch.dtype, fmt: torch.memory_format) -> torch.Tensor:
    t = t.to(dtype)
    return t.contiguous(memory_format=fmt) if t.dim() == 4 else t


def _reference(norm: str, t: dict, eps, step, sparsity) -> dict[str, torch.Tensor]:
    x_next, z = reference.apgd_step(t["x_adv"], t["x_prev"], t["x"], t["grad"], step, eps, norm, 0.75, sparsity)
    return {
        "project": reference.project(t["x_adv"], t["x"], eps, norm),
        "pgd_step": reference.pgd_step(t["x_adv"], t["x"], t["grad"], step, eps, norm, sparsity),
        "x_next": x_next,
        "z": z,
    }


def _run(backend: str, norm: str, t: dict, eps, step, sparsity) -> dict[str, torch.Tensor]:
    """Every op's outputs on t, unchecked."""
    kw = dict(backend=backend, check=False)
    x_next, z = ops.apgd_step(t["x_adv"], t["x_prev"], t["x"], t["grad"], step, eps, norm, l1_sparsity=sparsity, **kw)
    return {
        "project": ops.project(t["x_adv"], t["x"], eps, norm, **kw),
        "pgd_step": ops.pgd_step(t["x_adv"], t["x"], t["grad"], step, eps, norm, l1_sparsity=sparsity, **kw),
        "x_next": x_next,
        "z": z,
    }


def _expected_nan(
    norm: str, out: str, bad_entry: dict[str, torch.Tensor], bad_value: dict[str, torch.Tensor], like: torch.Tensor
) -> torch.Tensor:
    """The rule, stated independently of the code: NaN where a bad entry feeds (its position for Linf, its row
    for L2 / L1) and on the rows of a bad per-sample value the output reads (sparsity: L1 steps only)."""
    mask = torch.zeros(like.shape, dtype=torch.bool)
    for name in READS[out]:
        mask |= bad_entry[name]
    rows = mask.flatten(1).any(1) if norm != "Linf" else torch.zeros(like.shape[0], dtype=torch.bool)
    for name in VALUES[out]:
        if name != "sparsity" or norm == "L1":
            rows |= bad_value[name]
    return mask | rows.view(-1, *([1] * (like.dim() - 1)))


def _check(got: dict, want: dict, norm: str, bad_entry: dict, bad_value: dict, dtype: torch.dtype) -> None:
    for out in got:
        expected = _expected_nan(norm, out, bad_entry, bad_value, got[out])
        assert torch.equal(got[out].isnan().cpu(), expected), f"{out}: NaN at other places than the rule says"
        torch.testing.assert_close(
            got[out].double(), want[out].to(dtype).double(), atol=ATOL[dtype], rtol=0, equal_nan=True, msg=out
        )


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape,fmt,dtype", DATA_CASES)
def test_bad_entries_give_nan_where_they_feed(backend, norm, shape, fmt, dtype):
    raw = make_inputs(shape, seed=21)
    gen = torch.Generator().manual_seed(22)
    bad_entry = {k: torch.zeros(shape, dtype=torch.bool) for k in ("x_adv", "x", "grad", "x_prev")}
    for i, entries in enumerate(BAD_ENTRIES[: shape[0]] if shape[0] > 1 else BAD_ENTRIES[1:2]):
        positions = torch.randperm(raw["x"][i].numel(), generator=gen)
        for (name, value), j in zip(entries, positions.tolist()):
            raw[name][i].view(-1)[j] = value
            bad_entry[name][i].view(-1)[j] = True
    eps = make_eps(norm, shape[0], raw["x"][0].numel(), raw["gen"])
    t = {k: _cast(raw[k], dtype, fmt) for k in bad_entry}
    got = _run(backend, norm, t, eps.float(), 0.5 * eps.float(), 0.2)
    want = _reference(norm, {k: v.double() for k, v in t.items()}, eps, 0.5 * eps, 0.2)
    no_bad_value = {k: torch.zeros(shape[0], dtype=torch.bool) for k in ("eps", "step", "sparsity")}
    _check(got, want, norm, bad_entry, no_bad_value, dtype)


@pytest.mark.parametrize("norm", NORMS)
def test_bad_per_sample_values_unchecked_give_nan_rows_on_every_backend(backend, norm):
    """check=False: negative, zero, NaN and Inf eps / step_size (and bad l1_sparsity) never raise, on no backend;
    the rows they belong to come out NaN, the others as usual. check=True raises the same error everywhere."""
    shape = (len(BAD_VALUES), 2, 3, 5)
    raw = make_inputs(shape, seed=23)
    eps = make_eps(norm, shape[0], 30, raw["gen"]).float()
    values = {"eps": eps, "step": 0.5 * eps, "sparsity": torch.full((shape[0],), 0.3)}
    bad_value = {k: torch.zeros(shape[0], dtype=torch.bool) for k in values}
    for i, (name, value) in enumerate(BAD_VALUES):
        if name is not None:
            values[name][i] = value
            bad_value[name][i] = True
    t = {k: raw[k].float() for k in ("x_adv", "x", "grad", "x_prev")}
    got = _run(backend, norm, t, values["eps"], values["step"], values["sparsity"])
    ref = {k: v.double() for k, v in t.items()}
    want = _reference(norm, ref, values["eps"].double(), values["step"].double(), values["sparsity"])
    no_bad_entry = {k: torch.zeros(shape, dtype=torch.bool) for k in t}
    _check(got, want, norm, no_bad_entry, bad_value, torch.float32)
    with pytest.raises(ValueError, match=r"eps must be > 0 and finite, got \[-0.1"):
        ops.pgd_step(t["x_adv"], t["x"], t["grad"], 0.1, values["eps"], norm, backend=backend)
    with pytest.raises(ValueError, match=r"step_size must be > 0 and finite, got \[0.0, nan\]"):
        ops.pgd_step(t["x_adv"], t["x"], t["grad"], values["step"], 0.1, norm, backend=backend)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("gpu_backend", ("triton", "cpp"))
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", ((4, 3, 5, 7), (4, 3, 224, 224)))
def test_cuda_backends_follow_the_rule(gpu_backend, norm, shape):
    """The GPU kernels (CUDA tiles and per-row blocks, Triton chunks) on bad entries and bad per-sample values."""
    assert gpu_backend in ops.backends("cuda"), ops.backends("cuda")
    raw = make_inputs(shape, seed=27)
    gen = torch.Generator().manual_seed(28)
    bad_entry = {k: torch.zeros(shape, dtype=torch.bool) for k in ("x_adv", "x", "grad", "x_prev")}
    for i, entries in enumerate(BAD_ENTRIES):
        for (name, value), j in zip(entries, torch.randperm(raw["x"][i].numel(), generator=gen).tolist()):
            raw[name][i].view(-1)[j] = value
            bad_entry[name][i].view(-1)[j] = True
    eps = make_eps(norm, shape[0], raw["x"][0].numel(), raw["gen"])
    step = 0.5 * eps
    eps[0], step[1] = NAN, 0.0  # row 0's eps, row 1's step
    bad_value = {
        "eps": torch.tensor([True, False, False, False]),
        "step": torch.tensor([False, True, False, False]),
        "sparsity": torch.zeros(4, dtype=torch.bool),
    }
    for fmt in (torch.contiguous_format, torch.channels_last):
        t = {k: raw[k].float().cuda().contiguous(memory_format=fmt) for k in bad_entry}
        got = {k: v.cpu() for k, v in _run(gpu_backend, norm, t, eps.float().cuda(), step.float().cuda(), 0.2).items()}
        want = _reference(norm, {k: v.double() for k, v in raw.items() if k in bad_entry}, eps, step, 0.2)
        _check(got, want, norm, bad_entry, bad_value, torch.float32)


# ---------------------------------------------------------------- the empty batch


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(
    "shape,fmt",
    (((0, 3, 4, 4), torch.channels_last), ((0, 7), torch.contiguous_format), ((2, 0, 3), torch.contiguous_format)),
)
def test_empty_batch_gives_empty_outputs(backend, norm, shape, fmt):
    x = torch.rand(shape).contiguous(memory_format=fmt) if len(shape) == 4 else torch.rand(shape)
    for eps in (0.1, torch.full((shape[0],), 0.1)):
        outs = [
            ops.project(x, x, eps, norm, backend=backend),
            ops.pgd_step(x, x, x, eps, eps, norm, backend=backend, check=False),
            *ops.apgd_step(x, x, x, x, eps, eps, norm, backend=backend),
        ]
        for out in outs:
            assert out.shape == x.shape and out.dtype == x.dtype and out.numel() == 0
    ref = [
        reference.project(x, x, 0.1, norm),
        reference.pgd_step(x, x, x, 0.1, 0.1, norm),
        *reference.apgd_step(x, x, x, x, 0.1, 0.1, norm),
    ]
    assert all(r.shape == x.shape for r in ref)


@pytest.mark.parametrize("kl_backend", ("triton", "cpp", "torch"))
def test_trades_empty_batch_sums_to_zero_and_refuses_a_mean(kl_backend):
    use_backend(kl_backend)
    la, lc = torch.zeros(0, 5, requires_grad=True), torch.zeros(0, 5, requires_grad=True)
    y = torch.zeros(0, dtype=torch.int64)
    rows = ops.trades_kl(la, lc, reduction="none", backend=kl_backend)
    assert rows.shape == (0,) and rows.dtype == torch.float32
    total = ops.trades_objective(lc, la, y, 2.0, reduction="sum", backend=kl_backend)
    assert total.shape == () and total.item() == 0.0
    total.backward()
    assert la.grad.shape == (0, 5) and lc.grad.shape == (0, 5)
    for fn in (
        lambda: ops.trades_kl(la, lc, backend=kl_backend),
        lambda: ops.trades_objective(lc, la, y, 1.0, backend=kl_backend),
    ):
        with pytest.raises(ValueError, match=r"logits_adv is an empty batch \(N = 0\): its mean is undefined"):
            fn()


@pytest.mark.parametrize("kl_backend", ("triton", "cpp", "torch"))
def test_trades_bad_logits_agree_with_the_reference(kl_backend):
    """NaN / +Inf logits give NaN rows, a -Inf adversarial logit +Inf, on every backend, gradients included."""
    use_backend(kl_backend)
    gen = torch.Generator().manual_seed(24)
    la, lc = torch.randn(5, 9, generator=gen), torch.randn(5, 9, generator=gen)
    la[1, 2], la[2, 0], la[3, 4], lc[4, 8] = NAN, INF, -INF, NAN
    y = torch.randint(0, 9, (5,), generator=gen)
    got = [t.clone().requires_grad_() for t in (la, lc)]
    want = [t.double().requires_grad_() for t in (la, lc)]
    out = ops.trades_objective(got[1], got[0], y, 2.0, reduction="none", backend=kl_backend, check=False)
    ref = reference.trades_objective(want[1], want[0], y, 2.0, reduction="none")
    (out * torch.arange(1.0, 6.0)).sum().backward()
    (ref * torch.arange(1.0, 6.0, dtype=torch.float64)).sum().backward()
    assert out[0].isfinite() and out[1:3].isnan().all() and out[3] == INF and out[4].isnan()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5, equal_nan=True)
    for g, r in zip(got, want):
        torch.testing.assert_close(g.grad.double(), r.grad, atol=1e-6, rtol=1e-4, equal_nan=True)


# ---------------------------------------------------------------- attacks


class Net(nn.Module):
    """5 classes; `nan_rows`: samples (by position) whose logits are NaN; `nan_grad`: the gradient with respect
    to the input is NaN while the logits stay finite."""

    def __init__(self, nan_rows: tuple[int, ...] = (), nan_grad: bool = False) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(5, 48, generator=gen) * 0.3)
        self.nan_rows, self.nan_grad = nan_rows, nan_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nan_grad:
            x = _NaNGrad.apply(x)
        logits = x.flatten(1) @ self.weight.t()
        if self.nan_rows:
            mask = torch.zeros(x.shape[0], 1, dtype=torch.bool)
            mask[list(self.nan_rows)] = True
            logits = torch.where(mask, NAN, logits)
        return logits


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g * NAN


def _batch(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(25)
    return torch.rand(n, 3, 4, 4, generator=gen), torch.randint(0, 5, (n,), generator=gen)


ATTACKS = (
    ("APGD", "Linf", lambda: APGD(norm="Linf", eps=8 / 255, steps=4)),
    ("APGD", "L2", lambda: APGD(norm="L2", eps=0.5, steps=4, loss="dlr", select="misclassified", restarts=2)),
    ("APGD", "L1", lambda: APGD(norm="L1", eps=5.0, steps=4, loss="kl")),
    ("PGD", "L2", lambda: PGD(norm="L2", eps=0.5, steps=3)),
    ("FGSM-RS", "Linf", lambda: FGSMRS(eps=8 / 255)),
)


@pytest.mark.parametrize("name,norm,make", ATTACKS)
def test_attacks_raise_on_nan_logits(name, norm, make):
    x, y = _batch()
    with pytest.raises(
        NonFiniteError,
        match=rf"^{name} \({norm}, loss '\w+'\): NaN or Inf in the loss computed "
        r"from the model's logits on 5 of 5 samples",
    ) as info:
        make()(Net(nan_rows=tuple(range(5))), x, y)
    assert isinstance(info.value, ValueError) and info.value.samples == 5


def test_only_the_affected_samples_are_counted():
    x, y = _batch()
    with pytest.raises(NonFiniteError, match="on 2 of 5 samples") as info:
        APGD(norm="L2", eps=0.5, steps=3)(Net(nan_rows=(1, 3)), x, y)
    assert info.value.samples == 2


def test_a_nan_gradient_behind_finite_logits_is_named():
    x, y = _batch()
    with pytest.raises(
        NonFiniteError,
        match=r"^FGSM-RS \(Linf, loss 'ce'\): NaN or Inf in the gradient with "
        r"respect to the input on 5 of 5 samples; no adversarial points",
    ):
        FGSMRS(eps=8 / 255)(Net(nan_grad=True), x, y)


@pytest.mark.parametrize("norm,eps", (("Linf", 8 / 255), ("L2", 0.5), ("L1", 5.0)))
def test_finite_model_gives_the_reference_points(norm, eps):
    """The checks change nothing on good input: APGD on the torch backend is the reference APGD."""
    x, y = _batch()
    model = Net()
    ours = APGD(norm=norm, eps=eps, steps=5, backend="torch")(model, x, y)
    ref = reference.apgd_attack(model, x, y, eps, norm, steps=5)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert torch.isfinite(PGD(norm=norm, eps=eps, steps=2)(model, x, y)).all()


def test_long_rows_carry_a_bad_entry_across_chunks_and_blocks(backend):
    """Rows of several Triton chunks (4096) / C++ chunks (8192) / search blocks (1024), the bad entry in the last:
    the L2 steps' partial sums and the searches' counts carry it to the whole row."""
    shape = (3, 3, 50, 57)  # D = 8550
    raw = make_inputs(shape, seed=26)
    bad_entry = {k: torch.zeros(shape, dtype=torch.bool) for k in ("x_adv", "x", "grad", "x_prev")}
    for name, i in (("grad", 1), ("x_prev", 2)):
        raw[name][i].view(-1)[-3] = NAN
        bad_entry[name][i].view(-1)[-3] = True
    t = {k: raw[k].float() for k in bad_entry}
    eps = make_eps("L2", 3, 8550, raw["gen"])
    x_next, z = ops.apgd_step(
        t["x_adv"], t["x_prev"], t["x"], t["grad"], 0.5 * eps.float(), eps.float(), "L2", backend=backend, check=False
    )
    got = {
        "pgd_step": ops.pgd_step(
            t["x_adv"], t["x"], t["grad"], 0.5 * eps.float(), eps.float(), "L2", backend=backend, check=False
        ),
        "x_next": x_next,
        "z": z,
    }
    want = _reference("L2", {k: v.double() for k, v in t.items()}, eps, 0.5 * eps, 0.2)
    no_bad_value = {k: torch.zeros(3, dtype=torch.bool) for k in ("eps", "step", "sparsity")}
    _check(got, {k: want[k] for k in got}, "L2", bad_entry, no_bad_value, torch.float32)
    # The searches (L1 projection here) count bad entries over all 9 blocks of a row.
    x_adv = t["x_adv"][:2].masked_fill(bad_entry["grad"][:2], NAN)
    got = ops.project(x_adv, t["x"][:2], 60.0, "L1", backend=backend, check=False)
    assert got[1].isnan().all()
    torch.testing.assert_close(got[:1], reference.project(x_adv[:1], t["x"][:1], 60.0, "L1"), atol=2e-5, rtol=0)
