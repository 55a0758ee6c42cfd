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

Modules: projection (the projections, pgd_step, apgd_step, the bad-number rule), kl (trades_kl,
trades_objective), attacks (pgd_attack, apgd_attack, train_step: the ground truth of rft_fast.attacks / train).
"""

from __future__ import annotations

from rft_fast.reference.attacks import apgd_attack, attack_loss, pgd_attack, train_step
from rft_fast.reference.kl import trades_kl, trades_objective
from rft_fast.reference.projection import (
    Scalar,
    apgd_step,
    l1_projection_delta,
    pgd_step,
    project,
    project_l1,
    project_l2,
    project_linf,
)

__all__ = [
    "Scalar",
    "apgd_attack",
    "apgd_step",
    "attack_loss",
    "l1_projection_delta",
    "pgd_attack",
    "pgd_step",
    "project",
    "project_l1",
    "project_l2",
    "project_linf",
    "train_step",
    "trades_kl",
    "trades_objective",
]
