"""Training attacks as a registry: TrainConfig.attack names an entry (default "apgd", the study's).

    ATTACK_REGISTRY.register("my_attack", AttackSpec(build=...))   # docs/extending.md, "Add a training attack"

"apgd": APGD-`attack_steps`, no random start (first step 2 eps), loss attack_loss ("ce", the study's, or "kl":
APGD on TRADES' KL, which is not the original TRADES attack). "trades-pgd": the original TRADES attack
(rft_fast.attacks.trades_pgd.TradesPGD: sign steps on the KL from an unprojected x + 0.001 N(0, I) start) at
attack_eps and attack_steps, its step the official ratio 0.007 / 0.031 of the radius; attack_eps=0.031 and
attack_steps=10 give the official attack. Linf only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from rft_fast.attacks import APGD
from rft_fast.attacks.trades_pgd import TradesPGD
from rft_fast.registry import Registry
from rft_fast.study import NORMS

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig

Attack = Callable[..., Tensor]  # attack(model, x, y, *, eps=None) -> x_adv
TRADES_STEP_RATIO = 0.007 / 0.031  # the official TRADES step / radius


@dataclass(frozen=True)
class AttackSpec:
    """A training attack.

    Args:
        build: build(config) -> attack, called as attack(model, x, y) -> x_adv (detached, in [0, 1]) at
            config.attack_eps; under a non-constant eps_schedule as attack(model, x, y, eps=radius), so the
            attack must accept an `eps` keyword overriding its radius. The losses run it in eval mode.
        norms: the attack_norm values it supports (TrainConfig refuses the others).
        description: one line for listings.
    """

    build: Callable[[TrainConfig], Attack]
    norms: tuple[str, ...] = NORMS
    description: str = ""


ATTACK_REGISTRY: Registry[AttackSpec] = Registry("training attack")


def _apgd(config: TrainConfig) -> APGD:
    return APGD(
        norm=config.attack_norm,
        eps=config.attack_eps,
        steps=config.attack_steps,
        loss=config.attack_loss,
        random_start=False,
    )


def _trades_pgd(config: TrainConfig) -> TradesPGD:
    return TradesPGD(eps=config.attack_eps, step_size=config.attack_eps * TRADES_STEP_RATIO, steps=config.attack_steps)


ATTACK_REGISTRY.register(
    "apgd",
    AttackSpec(_apgd, description="APGD, attack_steps steps, no random start, loss attack_loss (the study: APGD-CE)"),
)
ATTACK_REGISTRY.register(
    "trades-pgd",
    AttackSpec(
        _trades_pgd,
        norms=("Linf",),
        description="the original TRADES attack: KL sign steps from x + 0.001 N(0, 1) (official: eps 0.031, 10 steps)",
    ),
)
