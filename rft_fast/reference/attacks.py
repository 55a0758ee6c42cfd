"""Reference attacks and the training step on the reference ops: PGD, AutoAttack's APGD, one adversarial
training step (the ground truth of rft_fast.attacks and rft_fast.train)."""

from __future__ import annotations

import torch
from torch import Tensor

from rft_fast.reference.kl import trades_kl, trades_objective
from rft_fast.reference.projection import Scalar, apgd_step, expand_per_sample, pgd_step, project, rows


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


def attack_loss(logits: Tensor, y: Tensor, loss: str, logits_clean: Tensor | None) -> Tensor:
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
        size = rows(t).abs().max(1)[0]
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device)
        size = (rows(t) ** 2).sum(1).sqrt()
    return (x + expand_per_sample(eps, x) * (t / expand_per_sample(size + 1e-12, x))).clamp(0.0, 1.0)


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
            values = attack_loss(logits, y, loss, logits_clean)
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
            x_r, loss_r, wrong_r, _, _ = _apgd_run(
                model, xf, y, eps_t, norm, steps, loss, logits_clean, gen, random_start, rho
            )
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
