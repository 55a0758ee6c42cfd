"""The study's fine-tuning protocols as a registry: FFT-50, FFT-5 (full fine-tuning), LP-50 (linear probing), and
the family TORA-<epochs> (robust adapters on a frozen ViT, two phases; any epoch count >= 2, TORA-50 listed).

    PROTOCOLS.register("FFT-2", Protocol("FFT-2", 2, False, "..."))       # docs/extending.md, "Add a protocol"

A protocol is data (name, epochs, flags) plus its Recipe, the functions the loop runs: `build` adapts the
architecture (TORA's adapters; used by the loop and by load_trained), `phase` says which phase an epoch is in,
and `stage` hands the loop a phase's Stage: which parameters train (LP's freezing), in which mode, with which
optimizer, scheduler, criterion and stepper.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rft_fast import models
from rft_fast.registry import Registry
from rft_fast.train import tora
from rft_fast.train.criterion import Criterion, LoopCriterion
from rft_fast.train.loss_registry import loss_spec
from rft_fast.train.optim import make_optimizer, make_scheduler, param_groups
from rft_fast.train.stepper import Stepper, make_stepper

if TYPE_CHECKING:
    from rft_fast.train.config import TrainConfig

TORA_FIELDS = ("tora_lambda", "tora_bottleneck", "tora_fusion_dim", "tora_phase1_epochs")


@dataclass
class Stage:
    """One phase of a protocol, as the loop trains it.

    phase: the phase's number (1 for single-phase protocols). stepper: owns the optimizer (stepper.optimizer) and
    the criterion (stepper.criterion, a LoopCriterion). scheduler: per epoch, or None. train_mode(model): the
    modes at the start of each epoch. labels: what the stage adds to each epoch's metrics and to the checkpoint
    (TORA: {"tora_phase": phase}).
    """

    phase: int
    stepper: Stepper
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    train_mode: Callable[[nn.Module], Any] = nn.Module.train
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def criterion(self) -> LoopCriterion:
        return self.stepper.criterion

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's "optimizer", "scheduler", the labels, and "criterion" when the criterion has state."""
        state = {
            "optimizer": self.stepper.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            **self.labels,
        }
        criterion = self.criterion.state_dict()
        return state if criterion is None else {**state, "criterion": criterion}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stepper.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.criterion.load_state_dict(state.get("criterion"))


class Recipe:
    """How a protocol trains; this base is full fine-tuning: one phase, everything trains, the study's optimizer
    (rft_fast.train.optim) and cosine schedule over the run's epochs. Subclass and override what differs.

    fields: TrainConfig fields only this recipe uses (TORA's): in hparams / run_id for its protocols only.
    """

    fields: tuple[str, ...] = ()

    def build(self, model: nn.Module, config: TrainConfig) -> nn.Module:
        """The architecture to train (and to load a checkpoint into): `model` itself here."""
        return model

    def check(self, config: TrainConfig) -> None:
        """Raises ValueError when `config` cannot train under this protocol (called by TrainConfig.validate)."""

    def phase(self, config: TrainConfig, epoch: int) -> int:
        """The phase of 0-based `epoch`."""
        return 1

    def resume_phase(self, state: dict[str, Any]) -> int:
        """The phase a checkpoint was in."""
        return 1

    def stage(self, model: nn.Module, config: TrainConfig, phase: int, criterion: Criterion) -> Stage:
        """The phase's Stage; `criterion` is the config's (make_criterion)."""
        optimizer = make_optimizer(param_groups(*self.parameters(model), config), config)
        scheduler = make_scheduler(optimizer, config)  # on the base optimizer (also under CurvatureSAM)
        return Stage(phase, make_stepper(optimizer, criterion, config), scheduler, self.train_mode)

    def parameters(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone, head) parameters; the frozen ones are left out of the optimizer."""
        return models.split_parameters(model)

    def train_mode(self, model: nn.Module) -> None:
        model.train()


class LinearProbe(Recipe):
    """The backbone frozen (requires_grad False, BatchNorm statistics frozen: eval mode), the head trains; the
    attack still backpropagates through the backbone to the input."""

    def parameters(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        backbone, head = models.split_parameters(model)
        for p in backbone:
            p.requires_grad_(False)
        return backbone, head

    def train_mode(self, model: nn.Module) -> None:
        model.eval()
        models.head_module(model).train()


class ToraRecipe(Recipe):
    """TORA (rft_fast.train.tora): the ViT wrapped with adapters and fusion, phase 1 the adapters, phase 2 the
    fusion, each with its own optimizer, schedule and criterion (tora.PhaseCriterion)."""

    fields = TORA_FIELDS

    def build(self, model: nn.Module, config: TrainConfig) -> nn.Module:
        return tora.build_model(model, config)

    def check(self, config: TrainConfig) -> None:
        if not 1 <= config.tora_phase1_epochs_resolved < config.num_epochs:
            raise ValueError(
                f"{config.protocol} with {config.num_epochs} epochs needs 1 <= tora_phase1_epochs < epochs (phase 2 "
                f"trains the fusion in the remaining epochs), got tora_phase1_epochs={config.tora_phase1_epochs!r}"
            )
        for name, used in (
            ("loss", loss_spec(config.loss).sharpness_aware),
            ("consistency_weight", config.consistency_weight > 0),
            ("eps_schedule", config.eps_schedule != "constant"),
        ):
            if used:
                raise ValueError(
                    f"protocol {config.protocol!r} (TORA) does not combine with {name}={getattr(config, name)!r}: "
                    "TORA trains with loss classic_at or trades, consistency_weight=0 and eps_schedule='constant'"
                )

    def phase(self, config: TrainConfig, epoch: int) -> int:
        return tora.phase_of_epoch(config, epoch)

    def resume_phase(self, state: dict[str, Any]) -> int:
        return state["tora_phase"]

    def stage(self, model: nn.Module, config: TrainConfig, phase: int, criterion: Criterion) -> Stage:
        tora.set_phase(model, phase)
        optimizer, scheduler = tora.phase_optimizer(model, config, phase)
        phased = tora.PhaseCriterion(criterion, phase, float(config.tora_lambda))
        return Stage(phase, make_stepper(optimizer, phased, config), scheduler, self.train_mode, {"tora_phase": phase})


FULL, LINEAR_PROBE, TORA = Recipe(), LinearProbe(), ToraRecipe()


@dataclass(frozen=True)
class Protocol:
    """A fine-tuning protocol: how many epochs, whether only the head trains (linear_probe), whether it trains
    TORA adapters (tora), and its recipe (default: LINEAR_PROBE when linear_probe, else FULL)."""

    name: str
    epochs: int
    linear_probe: bool
    description: str
    tora: bool = False
    recipe: Recipe | None = None

    def __post_init__(self) -> None:
        if self.recipe is None:
            object.__setattr__(self, "recipe", LINEAR_PROBE if self.linear_probe else FULL)


@dataclass(frozen=True)
class ProtocolFamily:
    """Protocols named "<prefix>-<epochs>" for any epochs >= min_epochs, made on demand by make(epochs)."""

    make: Callable[[int], Protocol]
    min_epochs: int = 1


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOL_FAMILIES: Registry[ProtocolFamily] = Registry("protocol family")


def tora_protocol(epochs: int) -> Protocol:
    """TORA-<epochs>: frozen ViT, phase 1 trains the accuracy/robustness adapters, phase 2 their fusion."""
    return Protocol(
        f"TORA-{epochs}",
        epochs,
        False,
        f"TORA robust adapters on a frozen ViT, two phases, {epochs} epochs",
        tora=True,
        recipe=TORA,
    )


for _p in (
    Protocol("FFT-50", 50, False, "full fine-tuning, 50 epochs"),
    Protocol("FFT-5", 5, False, "full fine-tuning, 5 epochs"),
    Protocol("LP-50", 50, True, "linear probing: backbone frozen (BatchNorm in eval mode), head trains, 50 epochs"),
    tora_protocol(50),
):
    PROTOCOLS.register(_p.name, _p)
PROTOCOL_FAMILIES.register("TORA", ProtocolFamily(tora_protocol, min_epochs=2))


def get_protocol(name: str) -> Protocol:
    """The protocol called `name` (case-insensitive; "<family>-<epochs>", e.g. "TORA-<epochs>" for any epochs
    >= 2); an unknown name raises a ValueError listing the known ones."""
    if name in PROTOCOLS:
        return PROTOCOLS.get(name)
    for prefix, family in PROTOCOL_FAMILIES.items():
        match = re.fullmatch(rf"{re.escape(prefix)}-(\d+)", str(name), re.IGNORECASE)
        if match and int(match.group(1)) >= family.min_epochs:
            return family.make(int(match.group(1)))
    families = " or ".join(f"{p}-<epochs>, epochs >= {f.min_epochs}" for p, f in PROTOCOL_FAMILIES.items())
    raise ValueError(
        f"unknown protocol {name!r}; expected one of {list(PROTOCOLS)}" + (f" or {families}" if families else "")
    )


def protocol_only_fields() -> set[str]:
    """Every field some protocol's recipe lists as its own (left out of hparams for the others)."""
    recipes = [p.recipe for _, p in PROTOCOLS.items()] + [
        f.make(f.min_epochs).recipe for _, f in PROTOCOL_FAMILIES.items()
    ]
    return {name for r in recipes for name in r.fields}
