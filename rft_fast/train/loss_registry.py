"""Training losses as a registry: TrainConfig.loss names an entry, and the entry says everything the run needs.

    LOSS_REGISTRY.register("my_loss", LossSpec(build=..., objective_sum=...))   # docs/extending.md, "Add a loss"

The study's five: "ce" (standard training), "classic_at" (CE on the training attack's examples), "trades" (CE +
beta KL, memory-saving unless memory_saving=False), and "classic_at+grace" / "trades+grace" (GraceLoss around
the base loss, trained with the sharpness-aware stepper; their TRADES keeps both graphs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from rft_fast import ops
from rft_fast.losses import ClassicATLoss, TRADESLoss
from rft_fast.registry import Registry
from rft_fast.regularizers import GraceLoss, Shift

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig

Criterion = Callable[[nn.Module, Tensor, Tensor], Tensor]
Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]
GRACE_FIELDS = ("grace_gram_weight", "grace_rho", "grace_beta2")


@dataclass(frozen=True)
class LossSpec:
    """A training loss.

    Args:
        build: build(config, attack) -> criterion(model, x, y) -> scalar loss; `attack` is the config's training
            attack (rft_fast.train.attack_registry, behind the eps schedule when there is one), None when
            uses_attack is False.
        objective_sum: objective_sum(model, x, x_adv, y, config) -> the validation objective summed over the
            batch (a 0-d tensor, no grad; x_adv: the training attack's examples at attack_eps): the per-epoch
            "val_loss" the grid's ASHA ranks by.
        uses_attack: whether it trains on a training attack's examples (an eps_schedule needs one).
        sharpness_aware: whether the run steps with CurvatureSAM (rft_fast.train.stepper); the criterion must then
            split into batch(model, x, y) / objective(model, batch) and carry state_dict() / load_state_dict()
            (as regularizers.GraceLoss does).
        fields: TrainConfig fields only this loss uses (GRACE's): they enter hparams / run_id for the losses that
            list them and are left out otherwise. Never list a field that other losses use too.
        description: one line for listings.
    """

    build: Callable[[TrainConfig, Attack | None], Criterion]
    objective_sum: Callable[[nn.Module, Tensor, Tensor, Tensor, TrainConfig], Tensor]
    uses_attack: bool = True
    sharpness_aware: bool = False
    fields: tuple[str, ...] = ()
    description: str = ""


LOSS_REGISTRY: Registry[LossSpec] = Registry("loss")


def loss_spec(name: str) -> LossSpec:
    return LOSS_REGISTRY.get(name)


def loss_only_fields() -> set[str]:
    """Every field some registered loss lists as its own (left out of hparams for the others)."""
    return {f for _, spec in LOSS_REGISTRY.items() for f in spec.fields}


def _standard(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x).float(), y)


def _ce_sum(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, config: TrainConfig) -> Tensor:
    return F.cross_entropy(model(x).float(), y, reduction="sum")


def _classic_at_sum(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, config: TrainConfig) -> Tensor:
    return F.cross_entropy(model(x_adv).float(), y, reduction="sum")


def _trades_sum(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, config: TrainConfig) -> Tensor:
    return ops.trades_objective(model(x), model(x_adv), y, config.beta) * x.shape[0]


def _trades(config: TrainConfig, attack: Attack | None) -> TRADESLoss:
    return TRADESLoss(attack, beta=config.beta, memory_saving=config.memory_saving)


def _grace(
    base: Callable[[TrainConfig, Attack | None], Criterion],
) -> Callable[[TrainConfig, Attack | None], GraceLoss]:
    """GraceLoss around the base loss; its shifted view seeded from config.seed (stream 2 seed)."""

    def build(config: TrainConfig, attack: Attack | None) -> GraceLoss:
        return GraceLoss(base(config, attack), config.grace_gram_weight, Shift(seed=(2 * config.seed) % 2**62))

    return build


_GRACE_TEXT = " + GRACE (Gram feature alignment, curvature-scaled sharpness-aware steps)"
for _name, _spec in (
    (
        "ce",
        LossSpec(
            lambda config, attack: _standard,
            _ce_sum,
            uses_attack=False,
            description="standard training: cross-entropy on the clean batch",
        ),
    ),
    (
        "classic_at",
        LossSpec(
            lambda config, attack: ClassicATLoss(attack),
            _classic_at_sum,
            description="Classic AT: cross-entropy on the training attack's examples",
        ),
    ),
    ("trades", LossSpec(_trades, _trades_sum, description="TRADES: CE(clean) + beta KL(clean || adversarial)")),
    (
        "classic_at+grace",
        LossSpec(
            _grace(lambda config, attack: ClassicATLoss(attack)),
            _classic_at_sum,
            sharpness_aware=True,
            fields=GRACE_FIELDS,
            description="Classic AT" + _GRACE_TEXT,
        ),
    ),
    (
        "trades+grace",
        LossSpec(
            _grace(_trades), _trades_sum, sharpness_aware=True, fields=GRACE_FIELDS, description="TRADES" + _GRACE_TEXT
        ),
    ),
):
    LOSS_REGISTRY.register(_name, _spec)
