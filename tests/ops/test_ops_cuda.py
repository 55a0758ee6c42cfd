"""The GPU backends (Triton, CUDA extension) against the reference; skipped where no GPU is visible."""

from __future__ import annotations

import pytest
import torch
from helpers import make_eps, make_inputs

from rft_fast import ops, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_BACKENDS = ("triton", "cpp")
SHAPES = ((1, 3, 7, 11), (3, 3, 33, 65), (64, 3, 224, 224))
DTYPES = ((torch.float32, 2e-5), (torch.bfloat16, 2**-7 + 1e-6), (torch.float16, 2**-10 + 1e-6))


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype,atol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", ("Linf", "L2", "L1"))
@pytest.mark.parametrize("channels_last", (False, True))
def test_cuda_ops_match_reference(backend, norm, shape, dtype, atol, channels_last):
    assert backend in ops.backends("cuda"), f"{backend} missing on cuda: {ops.backends('cuda')}"
    raw = make_inputs(shape, seed=11)
    eps = make_eps(norm, shape[0], raw["x"][0].numel(), raw["gen"])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    t = {k: raw[k].to("cuda", dtype).contiguous(memory_format=fmt) for k in ("x_adv", "x_prev", "x", "grad")}
    r = {k: v.double().cpu() for k, v in t.items()}
    step = eps * {"Linf": 0.25, "L2": 0.5, "L1": 1.0}[norm]
    e, s = eps.float().cuda(), step.float().cuda()
    got = {
        "project": ops.project(t["x_adv"], t["x"], e, norm, backend=backend),
        "pgd_step": ops.pgd_step(t["x_adv"], t["x"], t["grad"], s, e, norm, backend=backend),
        "apgd_step": ops.apgd_step(t["x_adv"], t["x_prev"], t["x"], t["grad"], s, e, norm, backend=backend)[0],
    }
    want = {
        "project": reference.project(r["x_adv"], r["x"], eps, norm),
        "pgd_step": reference.pgd_step(r["x_adv"], r["x"], r["grad"], step, eps, norm),
        "apgd_step": reference.apgd_step(r["x_adv"], r["x_prev"], r["x"], r["grad"], step, eps, norm)[0],
    }
    for op in got:
        assert got[op].is_contiguous(memory_format=fmt)
        torch.testing.assert_close(got[op].double().cpu(), want[op].to(dtype).double(), atol=atol, rtol=0, msg=op)


@pytest.mark.parametrize("c", (10, 1000, 21843))
def test_cuda_trades_kl_matches_reference(c):
    gen = torch.Generator().manual_seed(c)
    lc = (torch.randn(64, c, generator=gen) * 3).cuda().requires_grad_()
    la = (lc.detach() + torch.randn(64, c, generator=gen).cuda()).requires_grad_()
    y = torch.randint(0, c, (64,), generator=gen).cuda()
    out = ops.trades_objective(lc, la, y, 1.0, backend="triton")
    out.backward()
    la64, lc64 = la.detach().double().requires_grad_(), lc.detach().double().requires_grad_()
    ref = reference.trades_objective(lc64, la64, y, 1.0)
    ref.backward()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(la.grad.double(), la64.grad, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(lc.grad.double(), lc64.grad, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("norm", ("Linf", "L2", "L1"))
@pytest.mark.parametrize("shape,dtype", (((1, 3, 7, 11), torch.bfloat16), ((4, 3, 224, 224), torch.float32)))
def test_cuda_checks_flag_bad_data_and_keep_clean_bits(backend, norm, shape, dtype):
    """check=True on the GPU kernels (tiles, grid-stride loops, per-row blocks): a clean input gives the bits of
    check=False; bad data raises the message of the torch backend, which checks on the host first."""
    raw = make_inputs(shape, seed=13)
    t = {
        k: raw[k].to("cuda", dtype).contiguous(memory_format=torch.channels_last)
        for k in ("x_adv", "x_prev", "x", "grad")
    }
    eps = make_eps(norm, shape[0], raw["x"][0].numel(), raw["gen"]).float().cuda()

    def calls(t, eps, be, check=True):
        return (
            ops.project(t["x_adv"], t["x"], eps, norm, backend=be, check=check),
            ops.pgd_step(t["x_adv"], t["x"], t["grad"], eps / 4, eps, norm, backend=be, check=check),
            *ops.apgd_step(t["x_adv"], t["x_prev"], t["x"], t["grad"], eps / 4, eps, norm, backend=be, check=check),
        )

    for a, b in zip(calls(t, eps, backend), calls(t, eps, backend, check=False)):
        assert torch.equal(a, b)
    for name, value in (("x_adv", float("nan")), ("x", -1e-40), ("x", 1.5), ("x_prev", float("inf")), ("eps", 0.0)):
        bad = {k: v.clone() for k, v in t.items()}
        bad_eps = eps.clone()
        if name == "eps":
            bad_eps[-1] = value
        else:
            bad[name][-1, 1, shape[2] // 2, shape[3] - 1] = value
        messages = []
        for be in (backend, "torch"):
            with pytest.raises(ValueError) as err:
                calls(bad, bad_eps, be)
            messages.append(str(err.value))
        assert messages[0] == messages[1], name
