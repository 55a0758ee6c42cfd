"""Public ops and the one backend dispatch point (rft_fast.ops.dispatch).

Backends: "triton" (rft_fast.kernels; on CPU only under TRITON_INTERPRET=1), "cpp" (rft_fast._C: C++ on
CPU, CUDA on GPU), "torch" (eager, rft_fast.reference) and "auto" (the first of `backends(device)` that
takes the input dtype). Data checks (range, NaN, per-sample values; check=True, the default) cost no extra
pass on the kernel backends: the kernels flag bad data while they compute (one 4-byte read per call), and only
a flagged call runs the host checks that name the argument (rft_fast.ops.arguments). Inner loops pass
`check=False`, which skips even that read.

Bad numbers with check=False (one rule, the same on every backend; rft_fast.reference states it): project,
pgd_step and apgd_step neither raise on a bad value nor use it as a number: every output entry it feeds is NaN.
Bad values are NaN / +-Inf entries of x_adv, x, grad, x_prev and per-sample eps / step_size tensors whose entries
are not finite and > 0 (L1 steps: l1_sparsity outside (0, 1]). Linf (elementwise): NaN at the bad entry's
positions, a bad eps / step_size the sample's whole rows; L2 and L1 (row-coupled): the sample's whole row.
The kernels apply the rule as they read the data (no extra pass, no host sync), so the caller's finiteness
check of what comes next (the attacks check every loss) catches it. check=True raises a ValueError instead.
Float eps / step_size / l1_sparsity are always validated (no device read). An empty batch (N = 0, or no
elements) gives empty outputs of the right shape on every backend.

Modules: dispatch (backends, the choice per call, the kernel table), arguments (checks), layout ((N, D) rows in
memory order), projection (project, pgd_step, apgd_step), kl (trades_kl, trades_objective); docs/kernels.md.
"""

from __future__ import annotations

from rft_fast.ops.arguments import Scalar, check_beta, per_sample
from rft_fast.ops.dispatch import BACKENDS, KERNEL_DTYPES, backends
from rft_fast.ops.kl import REDUCTIONS, trades_kl, trades_objective
from rft_fast.ops.layout import memory_format
from rft_fast.ops.projection import apgd_step, pgd_step, project
from rft_fast.study import NORMS

__all__ = [
    "BACKENDS",
    "KERNEL_DTYPES",
    "NORMS",
    "REDUCTIONS",
    "Scalar",
    "apgd_step",
    "backends",
    "check_beta",
    "memory_format",
    "per_sample",
    "pgd_step",
    "project",
    "trades_kl",
    "trades_objective",
]
