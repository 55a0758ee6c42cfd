"""APGD (Croce & Hein 2020) on the fused ops, faithful to AutoAttack's implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.attacks import common
from rft_fast.modes import eval_mode

SELECTS = ("loss", "misclassified")


class _Run(NamedTuple):
    x: Tensor  # (N, ...) the point returned for each sample
    loss: Tensor  # (N,) its loss (the best loss of the run)
    wrong: Tensor  # (N,) bool: "loss" mode: x is misclassified; "misclassified" mode: some iterate was


@dataclass(eq=False)
class APGD:
    """Auto-PGD: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020 (arXiv:2003.01690); APGD-L1: Croce & Hein, "Mind the box: l1-APGD for
    sparse adversarial attacks on image classifiers", ICML 2021 (arXiv:2103.01208).

    Maximizes `loss` over {z : ||z - x||_p <= eps} ∩ [0, 1]^d, following AutoAttack's `APGDAttack`
    (autopgd_base.py) step for step: random start (Linf: 2U-1 and L2: N(0, I), each rescaled to the sphere of
    radius eps; L1: N(0, I) projected onto the ball ∩ box), initial step 2*eps (Linf, L2), momentum 0.75
    (none on the first iteration), checkpoints after 0.22 * steps iterations and then at intervals shrinking
    by 0.03 * steps down to 0.06 * steps (AutoAttack's integer version of p_{j+1} = p_j + max(p_j - p_{j-1}
    - 0.03, 0.06)); at a checkpoint the step is halved, and the iterate and its gradient reset to the best
    point, for the samples whose loss increased in at most rho = 75% of the steps since the last checkpoint,
    or whose step was not halved at the last checkpoint and whose best loss has not improved since. APGD-L1
    (no momentum, step eps) adapts its sparsity instead: checkpoints every 0.04 * steps iterations, the top-k
    share set to ||x_best - x||_0 / d / 1.5, the step reset to eps where the sparsity shrank by > 5% and else
    divided by 1.5 (never below eps / 10). Best loss and point are tracked per sample.

    Args:
        norm: "Linf" | "L2" | "L1" (default "Linf").
        eps: radius, a float or a tensor of shape (N,) (one per sample), > 0 (default 8/255).
        steps: iterations K >= 1 (default 10); the model is run K + 1 times with a gradient-free last run.
        loss: "ce" (cross-entropy), "dlr" (untargeted DLR, needs >= 3 classes) or "kl" (TRADES: KL(softmax(
            model(x)) || softmax(model(x_adv))) with the clean prediction fixed) (default "ce").
        restarts: independent runs >= 1 (default 1); per sample the better result is kept (misclassified
            first, then the higher loss).
        seed: seeds a torch.Generator on x's device at every call (default 0): same inputs, same output.
        random_start: AutoAttack's random start (default True). False starts at x (the study's training
            attack), except for loss "kl", which starts at x + 0.001 N(0, I) projected onto the ball ∩ [0, 1]
            (APGD-KL; the official TRADES attack, with an unprojected start, is TradesPGD).
        select: what is returned per sample (default "loss"):
            "loss": the point of highest loss found (x_best), what a training attack needs;
            "misclassified": as AutoAttack's perturb: a misclassified iterate where one was found, else the
            highest-loss point; samples misclassified at x are returned as x, and restarts run only on the
            samples still classified correctly (robust accuracy then matches AutoAttack's).
        rho: oscillation threshold of the step-halving test (default 0.75).
        momentum: weight of the new step against the previous direction (default 0.75, as AutoAttack).
        amp_dtype: None (the caller's autocast state is kept) or torch.bfloat16 / torch.float16: the model's
            forward (and so its backward) runs under autocast; losses, steps and bookkeeping stay float32.
        backend: ops backend, "auto" | "triton" | "cpp" | "torch" (default "auto").

    Call: `attack(model, x, y, *, eps=None) -> x_adv`. model: any nn.Module mapping [0, 1] images to logits
    (N, C); it runs in eval mode during the attack and each module's own mode is restored after. x: (N, C, H,
    W) (or (N, ...)) float tensor in [0, 1], NCHW or channels_last; y: (N,) integer labels in [0, C). eps, if
    given, overrides the attack's radius for this call. Returns a detached tensor like x (shape, dtype,
    memory format) inside the ball ∩ [0, 1]. Gradients are taken with respect to the input only
    (torch.autograd.grad): parameters' .grad and requires_grad are left untouched. Raises
    rft_fast.attacks.NonFiniteError (a ValueError) when a loss or input gradient of some sample was NaN / Inf
    at any step (checked on the device, read once at the end): no points are returned then.

    Example:
        >>> attack = APGD(norm="Linf", eps=4 / 255, steps=10, loss="ce", random_start=False)
        >>> x_adv = attack(model, x, y)                       # training: the highest-loss point
        >>> ev = APGD(norm="L2", eps=0.5, steps=100, loss="dlr", restarts=5, select="misclassified")
        >>> robust_acc = (model(ev(model, x, y)).argmax(1) == y).float().mean()
    """

    norm: str = "Linf"
    eps: float | Tensor = 8 / 255
    steps: int = 10
    loss: str = "ce"
    restarts: int = 1
    seed: int = 0
    random_start: bool = True
    select: str = "loss"
    rho: float = 0.75
    momentum: float = 0.75
    amp_dtype: torch.dtype | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        common.check_common(self.norm, self.loss, self.amp_dtype, self.seed, self.backend)
        common.check_radius("eps", self.eps)
        common.check_int("steps", self.steps, 1)
        common.check_int("restarts", self.restarts, 1)
        common.check_choice("select", self.select, SELECTS)
        common.check_choice("random_start", self.random_start, (True, False))
        common.check_float("rho", self.rho, 0.0, 1.0)
        common.check_float("momentum", self.momentum, 0.0, 1.0)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float | Tensor | None = None) -> Tensor:
        self._validate()
        eps = self.eps if eps is None else eps
        with eval_mode(model):
            x32, y, eps_t = common.prepare(x, y, eps)
            obj = common.Objective(model, x32, y, self.loss, self.amp_dtype, x.dtype, backend=self.backend)
            gen = common.generator(x.device, self.seed)
            if self.select == "misclassified":
                out = self._misclassified(obj, x32, y, eps_t, gen)
            else:
                out = self._highest_loss(obj, x32, eps_t, gen)
        obj.finite.raise_if_bad("APGD", self.norm, self.loss)
        return common.finish(out, x, eps, self.norm)

    # ------------------------------------------------------------ restarts

    def _highest_loss(self, obj: common.Objective, x: Tensor, eps: Tensor, gen: torch.Generator) -> Tensor:
        best = None
        for _ in range(self.restarts):
            run = self._run(obj, x, eps, gen, track_adv=False)
            if best is None:
                best = run
                continue
            better = (run.wrong & ~best.wrong) | ((run.wrong == best.wrong) & (run.loss > best.loss))
            best = _Run(
                common.where(better, run.x, best.x),
                torch.where(better, run.loss, best.loss),
                torch.where(better, run.wrong, best.wrong),
            )
        return best.x

    def _misclassified(self, obj: common.Objective, x: Tensor, y: Tensor, eps: Tensor, gen: torch.Generator) -> Tensor:
        logits = obj.logits_clean if obj.logits_clean is not None else obj.clean_logits(x)
        robust = logits.argmax(1) == y
        out = x.clone()
        out_loss = torch.full_like(eps, -float("inf"))
        n = x.shape[0]
        for _ in range(self.restarts):
            idx = robust.nonzero().squeeze(1)  # one sync per restart, as AutoAttack
            if idx.numel() == 0:
                break
            if idx.numel() == n:  # nobody fooled yet: no gathers
                run = self._run(obj, x, eps, gen, track_adv=True)
                take = run.wrong | (run.loss > out_loss)
                out = common.where(take, run.x, out)
                out_loss = torch.where(take, run.loss, out_loss)
                robust = robust & ~run.wrong
                continue
            run = self._run(obj.subset(idx), x[idx], eps[idx], gen, track_adv=True)
            take = run.wrong | (run.loss > out_loss[idx])
            out[idx] = common.where(take, run.x, out[idx])
            out_loss[idx] = torch.where(take, run.loss, out_loss[idx])
            robust[idx] = ~run.wrong
        return out

    # ------------------------------------------------------------ one run

    def _start(self, x: Tensor, eps: Tensor, gen: torch.Generator) -> Tensor:
        if self.random_start:
            return common.autoattack_start(x, eps, self.norm, gen, self.backend)
        if self.loss == "kl":
            return common.trades_start(x, eps, self.norm, gen, self.backend)
        return x.clone()

    def _run(self, obj: common.Objective, x: Tensor, eps: Tensor, gen: torch.Generator, *, track_adv: bool) -> _Run:
        """One APGD run (AutoAttack's attack_single_run) without host synchronization in the loop."""
        norm, steps, n, d = self.norm, self.steps, x.shape[0], x[0].numel()
        be = self.backend
        x_adv = self._start(x, eps, gen)
        loss, wrong, grad = obj(x_adv)
        x_best, grad_best, loss_best, wrong_best = x_adv, grad, loss, wrong
        fooled, x_best_adv = wrong, x_adv
        if norm == "L1":
            alpha, k = 1.0, max(int(0.04 * steps), 1)
            topk = torch.full_like(eps, 0.2)
            sp_old = torch.full_like(eps, float(d))
        else:
            alpha, k = 2.0, max(int(0.22 * steps), 1)
            n_min, size_decr = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
        step = alpha * eps
        loss_steps = torch.zeros(steps, n, device=x.device)
        loss_best_last, reduced_last = loss_best, torch.ones_like(wrong)
        x_old, counter = x_adv, 0
        for i in range(steps):
            if norm == "L1":
                x_new = ops.pgd_step(x_adv, x, grad, step, eps, "L1", l1_sparsity=topk, backend=be, check=False)
            elif i == 0:  # alpha = 1 on the first iteration: z itself
                x_new = ops.pgd_step(x_adv, x, grad, step, eps, norm, backend=be, check=False)
            else:
                x_new, _ = ops.apgd_step(
                    x_adv, x_old, x, grad, step, eps, norm, momentum=self.momentum, backend=be, check=False
                )
            x_old, x_adv = x_adv, x_new
            last = i == steps - 1  # the last gradient would never be used
            loss, wrong, grad = obj(x_adv, need_grad=not last)
            fooled = fooled | wrong
            if track_adv:
                x_best_adv = common.where(wrong, x_adv, x_best_adv)
            loss_steps[i] = loss
            better = loss > loss_best
            x_best = common.where(better, x_adv, x_best)
            if not last:
                grad_best = common.where(better, grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)
            wrong_best = torch.where(better, wrong, wrong_best)
            counter += 1
            if last or counter < k:
                continue
            counter = 0
            if norm == "L1":
                sp_curr = (x_best != x).reshape(n, -1).sum(1).float()
                reset = (sp_curr / sp_old) < 0.95
                topk = (sp_curr / d / 1.5).clamp(min=torch.finfo(torch.float32).tiny)  # 0 and tiny keep the same top-1
                step = torch.where(reset, alpha * eps, step / 1.5)
                step = torch.minimum(torch.maximum(step, alpha * eps / 10.0), alpha * eps)
                sp_old = sp_curr
            else:
                # loss increased in at most rho * k of the last k steps (AutoAttack's check_oscillation,
                # whose first window compares loss_steps[0] with the still-zero loss_steps[-1])
                j = i
                prev = loss_steps[j - k : j] if j >= k else torch.cat([loss_steps[-1:], loss_steps[:j]])
                oscillating = (loss_steps[j - k + 1 : j + 1] > prev).sum(0) <= k * self.rho
                no_improvement = ~reduced_last & (loss_best_last >= loss_best)
                reset = oscillating | no_improvement
                reduced_last, loss_best_last = reset, loss_best
                step = torch.where(reset, step / 2.0, step)
                k = max(k - size_decr, n_min)
            x_adv = common.where(reset, x_best, x_adv)
            grad = common.where(reset, grad_best, grad)
        if track_adv:
            return _Run(common.where(fooled, x_best_adv, x_best), loss_best, fooled)
        return _Run(x_best, loss_best, wrong_best)
