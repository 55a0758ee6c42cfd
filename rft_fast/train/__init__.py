"""Robust fine-tuning: `fit(config)`, the loop that `rft-fast train` and the grid both run, and the registries it
reads (docs/extending.md): losses (LOSS_REGISTRY: "ce" | "classic_at" | "trades" | "classic_at+grace" |
"trades+grace"), training attacks (ATTACK_REGISTRY: "apgd" | "trades-pgd") and protocols (PROTOCOLS: FFT-50,
FFT-5, LP-50, and the family TORA-<epochs> in PROTOCOL_FAMILIES); the options consistency_weight and
eps_schedule."""

from rft_fast.train.attack_registry import ATTACK_REGISTRY, AttackSpec
from rft_fast.train.checkpoint import CheckpointError
from rft_fast.train.config import TrainConfig
from rft_fast.train.criterion import (
    LoopCriterion,
    TrainingCriterion,
    make_criterion,
    training_attack,
    validation_attack,
)
from rft_fast.train.loop import TrainResult, fit, resolve_device
from rft_fast.train.loss_registry import LOSS_REGISTRY, LossSpec
from rft_fast.train.protocols import PROTOCOL_FAMILIES, PROTOCOLS, Protocol, ProtocolFamily, Recipe, Stage, get_protocol
from rft_fast.train.stepper import SharpnessAwareStepper, Stepper
from rft_fast.train.trained import TrainedRun, check_classes, load_run, load_trained

__all__ = [
    "TrainConfig",
    "TrainResult",
    "fit",
    "make_criterion",
    "TrainingCriterion",
    "LoopCriterion",
    "training_attack",
    "validation_attack",
    "resolve_device",
    "load_trained",
    "load_run",
    "TrainedRun",
    "check_classes",
    "CheckpointError",
    "LOSS_REGISTRY",
    "LossSpec",
    "ATTACK_REGISTRY",
    "AttackSpec",
    "PROTOCOLS",
    "PROTOCOL_FAMILIES",
    "Protocol",
    "ProtocolFamily",
    "Recipe",
    "Stage",
    "Stepper",
    "SharpnessAwareStepper",
    "get_protocol",
]
