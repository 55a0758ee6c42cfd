"""Attacks called as `attack(model, x, y) -> x_adv` (images in [0, 1], normalization inside the model).

APGD (Croce & Hein 2020; L1: 2021) faithful to AutoAttack, PGD (Madry et al. 2018) and FGSM-RS (Wong et al.
2020). Each runs the model in eval mode (each module's mode restored after), takes gradients with respect to
the input only, accepts per-sample eps, optional bf16 autocast for the model, and is deterministic given its
seed. Steps and projections run on the fused ops of rft_fast.ops. A NaN / Inf loss or input gradient at any
step raises NonFiniteError (a ValueError) at the end of the attack instead of returning points.
"""

from rft_fast.attacks.apgd import APGD
from rft_fast.attacks.common import LOSSES, NORMS, NonFiniteError
from rft_fast.attacks.pgd import FGSMRS, PGD

__all__ = ["APGD", "PGD", "FGSMRS", "NORMS", "LOSSES", "NonFiniteError"]
