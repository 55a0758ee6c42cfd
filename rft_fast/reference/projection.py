"""The reference projections and steps: exact sort-based projections, AutoAttack's update rules, and the
bad-number rule every backend follows (rft_fast.reference states it)."""

from __future__ import annotations

import torch
from torch import Tensor

Scalar = float | Tensor


def expand_per_sample(v: Scalar, like: Tensor) -> Tensor:
    """A float or (N,) tensor as an (N, 1, ..., 1) tensor broadcasting against `like`."""
    shape = (like.shape[0],) + (1,) * (like.dim() - 1)
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(like.shape[0]).reshape(shape)


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def rows(t: Tensor) -> Tensor:
    return t.flatten(1)  # (N, D); unlike reshape(N, -1), also for N = 0


def project_linf(x_adv: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """Nearest point of {||z - x||_inf <= eps} ∩ [0,1]^d: the problem is separable, so a clamp is exact."""
    e = expand_per_sample(eps, x)
    return torch.clamp(torch.min(torch.max(x_adv, x - e), x + e), 0.0, 1.0)


def project_l2(x_adv: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """Exact nearest point of {||z - x||_2 <= eps} ∩ [0,1]^d.

    KKT: z - x = clip(t * v, -x, 1 - x) with v = x_adv - x and t in (0, 1]. f(t) = ||clip(t v)||^2 is
    increasing and piecewise quadratic in t with a breakpoint where each coordinate hits the box; sort the
    breakpoints and solve f(t) = eps^2 on the segment that brackets it.
    """
    v, lo, hi = rows(x_adv - x), rows(-x), rows(1 - x)
    eps2 = (expand_per_sample(eps, v).reshape(-1, 1)) ** 2
    bound = torch.where(v > 0, hi, lo)
    inf = torch.full_like(v, float("inf"))
    brk = torch.where(v != 0, bound / torch.where(v != 0, v, torch.ones_like(v)), inf)
    brk, order = torch.sort(brk, dim=1)
    v_s, b_s = torch.gather(v, 1, order), torch.gather(bound, 1, order)
    zero = torch.zeros_like(v[:, :1])
    # Past the k-th breakpoint the k first coordinates sit at their bound (clipped, C_k) and the others
    # still scale with t (V_k).
    clipped = torch.cat([zero, torch.cumsum(b_s**2, 1)], 1)  # C_k, k = 0..D
    free = torch.flip(torch.cumsum(torch.flip(torch.cat([v_s**2, zero], 1), [1]), 1), [1])  # V_k
    brk0 = torch.cat([zero, brk], 1)  # t at the start of segment k
    f_start = clipped + torch.where(torch.isfinite(brk0), brk0**2 * free, torch.zeros_like(free))
    k = (f_start <= eps2).sum(1, keepdim=True) - 1  # last segment whose start is feasible
    c_k, v_k = torch.gather(clipped, 1, k), torch.gather(free, 1, k)
    t = torch.sqrt(torch.clamp(eps2 - c_k, min=0) / torch.where(v_k > 0, v_k, torch.ones_like(v_k)))
    t = torch.where(v_k > 0, t, torch.ones_like(t)).clamp(max=1.0)
    delta = torch.min(torch.max(t * v, lo), hi)
    return (x + delta.reshape(x.shape)).to(x_adv.dtype)


def l1_projection_delta(v: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """delta with x + delta the exact nearest point of {||z - x||_1 <= eps} ∩ [0,1]^d to x + v.

    KKT: delta_i = sign(v_i) * clip(|v_i| - lam, 0, u_i), u_i the room to the box in the direction of v_i.
    h(lam) = sum_i clip(|v_i| - lam, 0, u_i) is piecewise linear and non-increasing, with breakpoints at
    |v_i| - u_i (coordinate leaves its bound) and |v_i| (coordinate reaches 0). Walk the sorted breakpoints
    from lam = +inf down to the one where h reaches eps and solve on that segment (the algorithm of
    AutoAttack's L1_projection, Croce & Hein 2021, "Mind the box").
    """
    vr, xr = rows(v), rows(x)
    a = vr.abs()
    u = torch.where(vr > 0, 1 - xr, xr)
    eps_c = expand_per_sample(eps, vr).reshape(-1)
    pts = torch.cat([a, a - u], 1)
    slope = torch.cat([torch.ones_like(a), -torch.ones_like(a)], 1)
    pts, order = torch.sort(pts, dim=1, descending=True)
    active = torch.cumsum(torch.gather(slope, 1, order), 1)  # slope of h just below each breakpoint
    gaps = pts[:, :-1] - pts[:, 1:]
    h_at = torch.cat([torch.zeros_like(pts[:, :1]), torch.cumsum(active[:, :-1] * gaps, 1)], 1)
    k = ((h_at <= eps_c[:, None]) & (pts >= 0)).sum(1, keepdim=True) - 1
    lam = torch.gather(pts, 1, k.clamp(min=0)) - (eps_c[:, None] - torch.gather(h_at, 1, k.clamp(min=0))) / (
        torch.gather(active, 1, k.clamp(min=0)).clamp(min=1)
    )
    needs = torch.min(a, u).sum(1) > eps_c  # h(0) > eps: the ball constraint is active
    lam = torch.where(needs[:, None], lam.clamp(min=0), torch.zeros_like(lam))
    delta = torch.sign(vr) * torch.clamp(torch.min(a - lam, u), min=0)
    return delta.reshape(v.shape)


def project_l1(x_adv: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """Exact nearest point of {||z - x||_1 <= eps} ∩ [0,1]^d (see l1_projection_delta)."""
    return x + l1_projection_delta(x_adv - x, x, eps)


def _project_as_autoattack_l2(p: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """AutoAttack's L2 rule: rescale p - x into the ball, then clip to the box (feasible, not nearest)."""
    d = p - x
    n = rows(d).norm(dim=1).reshape(expand_per_sample(eps, x).shape)
    return torch.clamp(x + d / (n + 1e-12) * torch.min(expand_per_sample(eps, x), n), 0.0, 1.0)


def _l1_sparse_direction(grad: Tensor, sparsity: Scalar) -> Tensor:
    """APGD-L1's step direction: sign of the top-(sparsity) share of |grad|, divided by its count."""
    n = rows(grad).shape[1]
    q = torch.as_tensor(sparsity, dtype=torch.float32, device=grad.device).expand(grad.shape[0])
    idx = torch.clamp((1.0 - q) * n, min=0, max=n - 1).long()
    thr = rows(grad).abs().sort(dim=1)[0][torch.arange(grad.shape[0], device=grad.device), idx]
    sparse = grad * (grad.abs() >= thr.reshape(expand_per_sample(1.0, grad).shape))
    return sparse.sign() / (rows(sparse.sign().abs()).sum(1).reshape(expand_per_sample(1.0, grad).shape) + 1e-10)


def _step_point(x_adv: Tensor, grad: Tensor, step: Tensor, norm: str, sparsity: Scalar) -> Tensor:
    if norm == "Linf":
        return x_adv + step * torch.sign(grad)
    if norm == "L2":
        return x_adv + step * grad / (rows(grad).norm(dim=1).reshape(step.shape) + 1e-12)
    return x_adv + step * _l1_sparse_direction(grad, sparsity)


def _project_step(p: Tensor, x: Tensor, eps: Scalar, norm: str) -> Tensor:
    """The projection AutoAttack applies after a step (exact for Linf and L1, its rule for L2)."""
    if norm == "Linf":
        return project_linf(p, x, eps)
    if norm == "L2":
        return _project_as_autoattack_l2(p, x, eps)
    return project_l1(p, x, eps)


def cast(*ts: Tensor) -> list[Tensor]:
    dt = _compute_dtype(ts[0])
    return [t.to(dt) for t in ts]


def project(x_adv: Tensor, x: Tensor, eps: Scalar, norm: str) -> Tensor:
    """Exact Euclidean projection of x_adv onto the norm ball of radius eps around x, within [0,1]^d."""
    if x_adv.numel() == 0:
        return torch.empty_like(x_adv)
    xa, xc = cast(x_adv, x)
    e, ok = _radius(eps, xa)
    fn = {"Linf": project_linf, "L2": project_l2, "L1": project_l1}[norm]
    out = fn(_finite_or_zero(xa), _finite_or_zero(xc), e)
    return _poison(out, norm, ok, xa, xc).to(x_adv.dtype)


def pgd_step(
    x_adv: Tensor, x: Tensor, grad: Tensor, step_size: Scalar, eps: Scalar, norm: str, l1_sparsity: Scalar = 0.2
) -> Tensor:
    """One projected ascent step with AutoAttack's update rule for `norm`."""
    if x_adv.numel() == 0:
        return torch.empty_like(x_adv)
    xa, xc, g = cast(x_adv, x, grad)
    (e, ok_e), (s, ok_s) = _radius(eps, xa), _radius(step_size, xa)
    q, ok_q = _sparsity(l1_sparsity, xa, norm)
    p = _step_point(_finite_or_zero(xa), _finite_or_zero(g), expand_per_sample(s, xa), norm, q)
    out = _project_step(p, _finite_or_zero(xc), e, norm)
    return _poison(out, norm, ok_e & ok_s & ok_q, xa, xc, g).to(x_adv.dtype)


def apgd_step(
    x_adv: Tensor,
    x_prev: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: Scalar,
    eps: Scalar,
    norm: str,
    momentum: float = 0.75,
    l1_sparsity: Scalar = 0.2,
) -> tuple[Tensor, Tensor]:
    """APGD's update: z = P(x_k + eta * step(grad)); x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))."""
    if x_adv.numel() == 0:
        return torch.empty_like(x_adv), torch.empty_like(x_adv)
    xa, xp, xc, g = cast(x_adv, x_prev, x, grad)
    (e, ok_e), (s, ok_s) = _radius(eps, xa), _radius(step_size, xa)
    q, ok_q = _sparsity(l1_sparsity, xa, norm)
    ok = ok_e & ok_s & ok_q
    xa0, xc0 = _finite_or_zero(xa), _finite_or_zero(xc)
    z = _project_step(_step_point(xa0, _finite_or_zero(g), expand_per_sample(s, xa), norm, q), xc0, e, norm)
    x_next = _project_step(xa0 + (z - xa0) * momentum + (xa0 - _finite_or_zero(xp)) * (1 - momentum), xc0, e, norm)
    z = _poison(z, norm, ok, xa, xc, g)
    return _poison(x_next, norm, ok, xa, xc, g, xp).to(x_adv.dtype), z.to(x_adv.dtype)


# ---------------------------------------------------------------- bad numbers (the rule of rft_fast.reference)


def _valid(t: Tensor, upper: float | None = None) -> Tensor:
    """(N,) bool: finite and > 0 (and <= upper). NaN fails every comparison."""
    ok = (t > 0) & (t < float("inf"))
    return ok & (t <= upper) if upper is not None else ok


def _radius(v: Scalar, like: Tensor) -> tuple[Tensor, Tensor]:
    """eps or step_size as an (N,) tensor in like's dtype, 1 where invalid, and whether each is valid."""
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(like.shape[0])
    ok = _valid(t)
    return torch.where(ok, t, torch.ones_like(t)), ok


def _sparsity(v: Scalar, like: Tensor, norm: str) -> tuple[Scalar, Tensor]:
    """l1_sparsity (float32, as AutoAttack computes the top-k size), 1 where invalid; checked for L1 only."""
    ok = torch.ones(like.shape[0], dtype=torch.bool, device=like.device)
    if norm != "L1":
        return v, ok
    q = torch.as_tensor(v, dtype=torch.float32, device=like.device).expand(like.shape[0])
    ok = _valid(q, upper=1.0)
    return torch.where(ok, q, torch.ones_like(q)), ok


def _finite_or_zero(t: Tensor) -> Tensor:
    """t with NaN / Inf entries set to 0, so that the formulas run; those entries' outputs are poisoned after."""
    return torch.where(torch.isfinite(t), t, 0.0)  # in t's memory format


def _poison(out: Tensor, norm: str, ok: Tensor, *inputs: Tensor) -> Tensor:
    """out with NaN wherever it depends on a bad value: the entries at a non-finite input entry (Linf) or the
    rows holding one (L2, L1), and the rows whose per-sample values are invalid (not ok)."""
    finite = torch.stack([torch.isfinite(t) for t in inputs]).all(0)
    if norm != "Linf":
        finite = expand_per_sample(rows(finite).all(1), finite)
    good = finite & expand_per_sample(ok, finite)
    return out.clone().masked_fill_(~good, float("nan"))  # in out's memory format
