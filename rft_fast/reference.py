"""Plain-PyTorch ground truth for every op in rft_fast.ops, written for clarity, not speed.

The update rules follow AutoAttack (fra31/auto-attack, autopgd_base.py) line by line; the projections are
exact (sort-based solutions of the KKT conditions). Arithmetic runs in float32, or float64 when the inputs
are float64; results come back in the dtype of `x_adv`. These functions are also the "torch" backend.

Bad numbers (the rule every backend follows, rft_fast.ops with check=False included): project, pgd_step and
apgd_step never treat a bad value as a number and never raise on one; the outputs it feeds come out NaN, so
that a finiteness check downstream (the attacks' loss check) catches it. Bad values are NaN or +-Inf entries
of x_adv, x, grad or x_prev, and per-sample eps / step_size that are not finite and > 0 (for the L1 steps also
an l1_sparsity outside (0, 1]). Linf is elementwise: a bad entry makes the output entries at its position NaN,
a bad eps / step_size the sample's whole rows. L2 and L1 couple each row (norms, the top-k threshold, exact
projections): a bad entry makes the sample's whole output row NaN. In apgd_step, z does not read x_prev (a bad
x_prev reaches x_next only). Other samples are unaffected. An empty batch (no elements) gives empty outputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

Scalar = float | Tensor


def _per_sample(v: Scalar, like: Tensor) -> Tensor:
    """A float or (N,) tensor as an (N, 1, ..., 1) tensor broadcasting against `like`."""
    shape = (like.shape[0],) + (1,) * (like.dim() - 1)
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(like.shape[0]).reshape(shape)


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _rows(t: Tensor) -> Tensor:
    return t.flatten(1)  # (N, D); unlike reshape(N, -1), also for N = 0


def project_linf(x_adv: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """Nearest point of {||z - x||_inf <= eps} ∩ [0,1]^d: the problem is separable, so a clamp is exact."""
    e = _per_sample(eps, x)
    return torch.clamp(torch.min(torch.max(x_adv, x - e), x + e), 0.0, 1.0)


def project_l2(x_adv: Tensor, x: Tensor, eps: Scalar) -> Tensor:
    """Exact nearest point of {||z - x||_2 <= eps} ∩ [0,1]^d.

    KKT: z - x = clip(t * v, -x, 1 - x) with v = x_adv - x and t in (0, 1]. f(t) = ||clip(t v)||^2 is
    increasing and piecewise quadratic in t with a breakpoint where each coordinate hits the box; sort the
    breakpoints and solve f(t) = eps^2 on the segment that brackets it.
    """
    v, lo, hi = _rows(x_adv - x), _rows(-x), _rows(1 - x)
    eps2 = (_per_sample(eps, v).reshape(-1, 1)) ** 2
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
    vr, xr = _rows(v), _rows(x)
    a = vr.abs()
    u = torch.where(vr > 0, 1 - xr, xr)
    eps_c = _per_sample(eps, vr).reshape(-1)
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
    n = _rows(d).norm(dim=1).reshape(_per_sample(eps, x).shape)
    return torch.clamp(x + d / (n + 1e-12) * torch.min(_per_sample(eps, x), n), 0.0, 1.0)


def _l1_sparse_direction(grad: Tensor, sparsity: Scalar) -> Tensor:
    """APGD-L1's step direction: sign of the top-(sparsity) share of |grad|, divided by its count."""
    n = _rows(grad).shape[1]
    q = torch.as_tensor(sparsity, dtype=torch.float32, device=grad.device).expand(grad.shape[0])
    idx = torch.clamp((1.0 - q) * n, min=0, max=n - 1).long()
    thr = _rows(grad).abs().sort(dim=1)[0][torch.arange(grad.shape[0], device=grad.device), idx]
    sparse = grad * (grad.abs() >= thr.reshape(_per_sample(1.0, grad).shape))
    return sparse.sign() / (_rows(sparse.sign().abs()).sum(1).reshape(_per_sample(1.0, grad).shape) + 1e-10)


def _step_point(x_adv: Tensor, grad: Tensor, step: Tensor, norm: str, sparsity: Scalar) -> Tensor:
    if norm == "Linf":
        return x_adv + step * torch.sign(grad)
    if norm == "L2":
        return x_adv + step * grad / (_rows(grad).norm(dim=1).reshape(step.shape) + 1e-12)
    return x_adv + step * _l1_sparse_direction(grad, sparsity)


def _project_step(p: Tensor, x: Tensor, eps: Scalar, norm: str) -> Tensor:
    """The projection AutoAttack applies after a step (exact for Linf and L1, its rule for L2)."""
    if norm == "Linf":
        return project_linf(p, x, eps)
    if norm == "L2":
        return _project_as_autoattack_l2(p, x, eps)
    return project_l1(p, x, eps)


def _cast(*ts: Tensor) -> list[Tensor]:
    dt = _compute_dtype(ts[0])
    return [t.to(dt) for t in ts]


def project(x_adv: Tensor, x: Tensor, eps: Scalar, norm: str) -> Tensor:
    """Exact Euclidean projection of x_adv onto the norm ball of radius eps around x, within [0,1]^d."""
    if x_adv.numel() == 0:
        return torch.empty_like(x_adv)
    xa, xc = _cast(x_adv, x)
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
    xa, xc, g = _cast(x_adv, x, grad)
    (e, ok_e), (s, ok_s) = _radius(eps, xa), _radius(step_size, xa)
    q, ok_q = _sparsity(l1_sparsity, xa, norm)
    p = _step_point(_finite_or_zero(xa), _finite_or_zero(g), _per_sample(s, xa), norm, q)
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
    xa, xp, xc, g = _cast(x_adv, x_prev, x, grad)
    (e, ok_e), (s, ok_s) = _radius(eps, xa), _radius(step_size, xa)
    q, ok_q = _sparsity(l1_sparsity, xa, norm)
    ok = ok_e & ok_s & ok_q
    xa0, xc0 = _finite_or_zero(xa), _finite_or_zero(xc)
    z = _project_step(_step_point(xa0, _finite_or_zero(g), _per_sample(s, xa), norm, q), xc0, e, norm)
    x_next = _project_step(xa0 + (z - xa0) * momentum + (xa0 - _finite_or_zero(xp)) * (1 - momentum), xc0, e, norm)
    z = _poison(z, norm, ok, xa, xc, g)
    return _poison(x_next, norm, ok, xa, xc, g, xp).to(x_adv.dtype), z.to(x_adv.dtype)


# ---------------------------------------------------------------- bad numbers (the rule in the module docstring)


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
        finite = _per_sample(_rows(finite).all(1), finite)
    good = finite & _per_sample(ok, finite)
    return out.clone().masked_fill_(~good, float("nan"))  # in out's memory format


def trades_kl(logits_adv: Tensor, logits_clean: Tensor, reduction: str = "mean") -> Tensor:
    """KL(softmax(clean) || softmax(adv)) summed over classes; mean over the batch by default.

    The quantity of the official TRADES code: KLDivLoss(reduction="sum")(log_softmax(adv), softmax(clean)) / N.
    Differentiable in both arguments. reduction: "mean" | "sum" | "none" (per sample).
    """
    la, lc = _cast(logits_adv, logits_clean)
    log_pc = torch.log_softmax(lc, dim=1)
    kl = (log_pc.exp() * (log_pc - torch.log_softmax(la, dim=1))).sum(dim=1)
    return _reduce(kl, reduction)


def trades_objective(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float, reduction: str = "mean") -> Tensor:
    """TRADES' training loss: CE(clean, y) + beta * KL(softmax(clean) || softmax(adv))."""
    lc = _cast(logits_clean)[0]
    ce = torch.nn.functional.cross_entropy(lc, y, reduction="none")
    return _reduce(ce + beta * trades_kl(logits_adv, logits_clean, reduction="none"), reduction)


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def pgd_attack(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "Linf",
    loss: str = "ce",
    seed: int = 0,
) -> Tensor:
    """A plain PGD (Madry et al. 2018) on the reference ops, for tests of the losses.

    loss "ce": cross-entropy against y; "kl": KL(softmax(model(x)) || softmax(model(x_adv))), the TRADES
    attack, started at x + 0.001 * N(0, 1) as in the official code (the KL gradient vanishes at x itself).
    Runs the model as it is (callers choose its mode) and returns a detached x_adv in x's dtype.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        target = torch.softmax(model(x).float(), dim=1) if loss == "kl" else None
        start = x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        x_adv = project(start, x, eps, norm)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv).float()
        if loss == "kl":
            objective = (target * (torch.log(target.clamp_min(1e-30)) - torch.log_softmax(logits, 1))).sum()
        else:
            objective = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(objective, x_adv)
        x_adv = pgd_step(x_adv.detach(), x, grad, step_size, eps, norm)
    return x_adv.detach()


def _attack_loss(logits: Tensor, y: Tensor, loss: str, logits_clean: Tensor | None) -> Tensor:
    """Per-sample loss to maximize: cross-entropy, AutoAttack's DLR, or the TRADES KL from the clean logits."""
    logits = logits.float()
    if loss == "ce":
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")
    if loss == "dlr":
        z_sorted, ind_sorted = logits.sort(dim=1)
        y_is_max = (ind_sorted[:, -1] == y).float()
        z_y = logits[torch.arange(len(y), device=y.device), y]
        z_other = z_sorted[:, -2] * y_is_max + z_sorted[:, -1] * (1.0 - y_is_max)
        return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)
    return trades_kl(logits, logits_clean, reduction="none")


def _apgd_start(x: Tensor, eps: Tensor, norm: str, gen: torch.Generator) -> Tensor:
    """AutoAttack's random start (same draws as rft_fast.attacks)."""
    if norm == "L1":
        t = torch.randn(x.shape, generator=gen, device=x.device)
        return project(x + t, x, eps, "L1").clamp(0.0, 1.0)
    if norm == "Linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=x.device) - 1
        size = _rows(t).abs().max(1)[0]
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device)
        size = (_rows(t) ** 2).sum(1).sqrt()
    return (x + _per_sample(eps, x) * (t / _per_sample(size + 1e-12, x))).clamp(0.0, 1.0)


def _apgd_run(model, x, y, eps, norm, steps, loss, logits_clean, gen, random_start, rho):
    """AutoAttack's attack_single_run, on the reference ops. Returns (x_best, loss_best, pred_best_wrong,
    fooled, x_best_adv)."""
    n, d = x.shape[0], x[0].numel()
    if random_start:
        x_adv = _apgd_start(x, eps, norm, gen)
    elif loss == "kl":
        x_adv = project(x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device), x, eps, norm)
    else:
        x_adv = x.clone()

    def loss_and_grad(point: Tensor):
        point = point.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            values = _attack_loss(logits, y, loss, logits_clean)
            grad = torch.autograd.grad(values.sum(), point)[0]
        return values.detach(), logits.detach().argmax(1) != y, grad.detach()

    loss_now, wrong, grad = loss_and_grad(x_adv)
    x_best, grad_best, loss_best, wrong_best = x_adv.clone(), grad.clone(), loss_now.clone(), wrong.clone()
    fooled, x_best_adv = wrong.clone(), x_adv.clone()

    if norm == "L1":  # APGD-L1: adaptive sparsity, no momentum, step eps, checkpoints every 4% of the steps
        alpha, k = 1.0, max(int(0.04 * steps), 1)
        topk = torch.full((n,), 0.2, device=x.device)
        sp_old = torch.full((n,), float(d), device=x.device)
    else:
        alpha, k = 2.0, max(int(0.22 * steps), 1)
        n_iter_min, size_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    step = alpha * eps.clone()
    loss_steps = torch.zeros(steps, n, device=x.device)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones(n, dtype=torch.bool, device=x.device)
    x_adv_old = x_adv.clone()
    counter = 0

    for i in range(steps):
        if norm == "L1":
            x_new = pgd_step(x_adv, x, grad, step, eps, "L1", l1_sparsity=topk)
        else:
            momentum = 0.75 if i > 0 else 1.0
            x_new, _ = apgd_step(x_adv, x_adv_old, x, grad, step, eps, norm, momentum)
        x_adv_old, x_adv = x_adv, x_new

        loss_now, wrong, grad = loss_and_grad(x_adv)
        fooled |= wrong
        x_best_adv[wrong] = x_adv[wrong]
        loss_steps[i] = loss_now
        improved = loss_now > loss_best
        x_best[improved] = x_adv[improved]
        grad_best[improved] = grad[improved]
        loss_best[improved] = loss_now[improved]
        wrong_best[improved] = wrong[improved]

        counter += 1
        if counter != k:
            continue
        counter = 0
        if norm == "L1":
            sp_curr = (x_best - x != 0).reshape(n, -1).sum(1).float()
            reset = sp_curr / sp_old < 0.95
            topk = (sp_curr / d / 1.5).clamp(min=torch.finfo(torch.float32).tiny)
            step[reset] = alpha * eps[reset]
            step[~reset] /= 1.5
            step = torch.min(torch.max(step, alpha * eps / 10), alpha * eps)
            sp_old = sp_curr
        else:
            increased = torch.zeros(n, device=x.device)
            for c in range(k):  # python's negative index on the first window, as AutoAttack
                increased += (loss_steps[i - c] > loss_steps[i - c - 1]).float()
            oscillating = increased <= k * rho
            no_improvement = ~reduced_last_check & (loss_best_last_check >= loss_best)
            reset = oscillating | no_improvement
            reduced_last_check, loss_best_last_check = reset.clone(), loss_best.clone()
            step[reset] /= 2.0
            k = max(k - size_decr, n_iter_min)
        x_adv = x_adv.clone()
        x_adv[reset] = x_best[reset]
        grad[reset] = grad_best[reset]
    return x_best, loss_best, wrong_best, fooled, x_best_adv


def apgd_attack(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Scalar,
    norm: str = "Linf",
    steps: int = 10,
    loss: str = "ce",
    restarts: int = 1,
    seed: int = 0,
    random_start: bool = True,
    select: str = "loss",
    rho: float = 0.75,
) -> Tensor:
    """A plain APGD (Croce & Hein 2020, arXiv:2003.01690; L1: arXiv:2103.01208) on the reference ops, written
    after AutoAttack's APGDAttack for clarity, not speed: the ground truth of rft_fast.attacks.APGD.

    Same arguments and semantics as rft_fast.attacks.APGD (eps a float or (N,) tensor; loss "ce" | "dlr" |
    "kl"; select "loss" returns each sample's highest-loss point, "misclassified" AutoAttack's choice:
    a misclassified iterate where found, else the highest-loss point, x itself where x is misclassified,
    restarts only on the samples not yet fooled), and the same random draws from torch.Generator(x.device)
    seeded with `seed`. Runs the model as it is (callers choose its mode); float32 arithmetic; returns a
    detached x_adv in x's dtype.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    xf = x.detach().float()
    eps_t = torch.as_tensor(eps, dtype=torch.float32, device=x.device).expand(x.shape[0]).clone()
    logits_clean = None
    if loss == "kl" or select == "misclassified":
        with torch.no_grad():
            logits_clean = model(xf).float()
    if select == "loss":
        best_x, best_loss, best_wrong = xf.clone(), None, None
        for _ in range(restarts):
            x_r, loss_r, wrong_r, _, _ = _apgd_run(model, xf, y, eps_t, norm, steps, loss, logits_clean, gen, random_start, rho)
            if best_loss is None:
                best_x, best_loss, best_wrong = x_r, loss_r, wrong_r
                continue
            better = (wrong_r & ~best_wrong) | ((wrong_r == best_wrong) & (loss_r > best_loss))
            best_x[better], best_loss[better], best_wrong[better] = x_r[better], loss_r[better], wrong_r[better]
        return best_x.to(x.dtype)
    robust = logits_clean.argmax(1) == y
    out = xf.clone()
    out_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
    for _ in range(restarts):
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x_r, loss_r, _, fooled, x_adv_r = _apgd_run(
            model, xf[idx], y[idx], eps_t[idx], norm, steps, loss, logits_clean[idx], gen, random_start, rho
        )
        result = torch.where(fooled.view(-1, *([1] * (x.dim() - 1))), x_adv_r, x_r)
        take = fooled | (loss_r > out_loss[idx])
        out[idx[take]] = result[take]
        out_loss[idx[take]] = loss_r[take]
        robust[idx[fooled]] = False
    return out.to(x.dtype)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    loss: str = "classic_at",
    eps: float = 4 / 255,
    steps: int = 10,
    beta: float = 1.0,
    norm: str = "Linf",
) -> float:
    """One plain adversarial training step, the ground truth of rft_fast.train's step: APGD-CE in eager
    PyTorch (no random start, the model in eval mode, each module's mode restored), then Classic AT
    (CE on x_adv) or the standard two-graph TRADES (clean and adversarial graphs alive together), backward
    and the optimizer's step. Returns the loss value."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    x_adv = apgd_attack(model, x, y, eps, norm, steps, loss="ce", random_start=False)
    for m, was_training in flags:
        m.training = was_training
    if loss == "classic_at":
        objective = torch.nn.functional.cross_entropy(model(x_adv).float(), y)
    elif loss == "trades":
        logits_clean = model(x)
        objective = trades_objective(logits_clean, model(x_adv), y, beta)
    else:
        raise ValueError(f"loss must be 'classic_at' or 'trades', got {loss!r}")
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return objective.item()
