"""Robust fine-tuning: the study's protocols (FFT-50, FFT-5, LP-50, TORA-<epochs>), losses "ce" | "classic_at" |
"trades" | "classic_at+grace" | "trades+grace", the options consistency_weight and eps_schedule, and
`fit(config)`, the loop that `rft-fast train` and the grid both run."""
from rft_fast.train.checkpoint import CheckpointError
from rft_fast.train.config import TrainConfig
from rft_fast.train.criterion import TrainingCriterion, make_criterion, training_attack, validation_attack
from rft_fast.train.loop import TrainResult, fit, resolve_device
from rft_fast.train.protocols import PROTOCOLS, Protocol, get_protocol
from rft_fast.train.trained import load_trained

__all__ = [
    "TrainConfig", "TrainResult", "fit", "make_criterion", "TrainingCriterion", "training_attack", "validation_attack", "resolve_device",
    "PROTOCOLS", "Protocol", "get_protocol", "load_trained", "CheckpointError",
]
