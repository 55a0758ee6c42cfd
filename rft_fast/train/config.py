"""TrainConfig: one fine-tuning run (backbone, dataset, protocol, loss, hyperparameters) as a typed record.

Defaults are the study's setting (REFERENCE.md): AdamW betas (0.9, 0.95), separate lr / weight decay for
backbone and head, no decay on biases and norms, effective batch 1024 by gradient accumulation, training
attack APGD-10 Linf 4/255 without random start, TRADES beta 1, per-epoch validation with PGD-10.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rft_fast.train.protocols import get_protocol

LOSSES = ("ce", "classic_at", "trades", "classic_at+grace", "trades+grace")
GRACE_LOSSES = ("classic_at+grace", "trades+grace")
EPS_SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("adamw", "sgd")
AMP = ("auto", "bf16", "none")
NORMS = ("Linf", "L2", "L1")
ATTACK_LOSSES = ("ce", "kl")


@dataclass
class TrainConfig:
    """Everything one run needs; `fit(config)` trains it. Paths are strings so the config is JSON data.

    Args (groups):
        backbone, dataset, protocol ("FFT-50" | "FFT-5" | "LP-50" | "TORA-<epochs>"), loss ("ce" | "classic_at" |
            "trades" | "classic_at+grace" | "trades+grace").
        data_root: the dataset's local root (None for the built-in "digits"); split_seed: the study's 42.
        pretrained_path: the backbone's weights file; random_init=True trains from scratch (tests only).
        image_size: training and validation resolution (the study resizes every dataset to 224).
        optimizer "adamw" (betas (0.9, 0.95)) | "sgd" (momentum); lr_* / wd_*: per group; cosine: anneal
            to 0 over the epochs.
        batch_size: micro-batch on the device; effective_batch: samples per optimizer step (gradient
            accumulation, a multiple of batch_size).
        epochs: None uses the protocol's.
        attack_*: the training attack (APGD, K steps, no random start, first step 2 eps); attack_loss "ce"
            (the study: both losses train on APGD-CE examples) or "kl" (original TRADES); beta: TRADES weight;
            memory_saving: the recomputing TRADES.
        val_steps: PGD steps of the per-epoch robust validation (at attack_eps); val_samples: stratified
            validation subset size (None: the whole split).
        amp: "auto" (bf16 autocast on GPU, none on CPU) | "bf16" | "none"; channels_last: None = on GPU.
        device: None = cuda when visible; workers: data-loading processes (None: automatic).
        max_batches: cap on micro-batches per epoch (smoke tests); out_dir: checkpoints and metrics.jsonl.
        tora_*: TORA protocols only (ignored, and left out of hparams / run_id, otherwise): tora_lambda, the
            phase-2 weight of the robust loss; tora_bottleneck / tora_fusion_dim, adapter and fusion widths;
            tora_phase1_epochs, epochs of phase 1 (None: half, rounded up).
        grace_*: losses "classic_at+grace" / "trades+grace" only (ignored, and left out of hparams / run_id,
            otherwise): GRACE (rft_fast.regularizers.GraceLoss around the base loss, and the optimizer wrapped in
            rft_fast.train.grace.CurvatureSAM): grace_gram_weight, the Gram alignment's weight; grace_rho /
            grace_beta2, CurvatureSAM's radius and curvature EMA decay.
        consistency_weight: > 0 adds weight * the symmetric KL between the predictions on two shifted views
            (rft_fast.regularizers.consistency_loss) to whatever loss is configured; 0 (default) is off and left
            out of hparams / run_id.
        eps_schedule: the training attack's radius over the run's optimizer steps (rft_fast.train.schedule):
            "constant" (default: attack_eps throughout; eps_schedule, eps_start and eps_warmup are then left out
            of hparams / run_id) | "linear" | "cosine" ramp from eps_start to attack_eps over the first
            eps_warmup fraction of the optimizer steps. A radius of 0 trains on the clean batch. Validation
            always attacks at attack_eps.
        TORA protocols combine with none of grace, consistency_weight > 0 or a non-constant eps_schedule.
    """

    backbone: str
    dataset: str
    protocol: str = "FFT-50"
    loss: str = "classic_at"
    data_root: str | None = None
    split_seed: int = 42
    pretrained_path: str | None = None
    random_init: bool = False
    image_size: int = 224
    optimizer: str = "adamw"
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    wd_backbone: float = 1e-4
    wd_head: float = 1e-4
    momentum: float = 0.9
    cosine: bool = True
    batch_size: int = 64
    effective_batch: int = 1024
    epochs: int | None = None
    attack_norm: str = "Linf"
    attack_eps: float = 4 / 255
    attack_steps: int = 10
    attack_loss: str = "ce"
    beta: float = 1.0
    memory_saving: bool = True
    val_steps: int = 10
    val_samples: int | None = None
    amp: str = "auto"
    channels_last: bool | None = None
    device: str | None = None
    workers: int | None = None
    seed: int = 0
    max_batches: int | None = None
    out_dir: str | None = None
    tora_lambda: float = 0.5
    tora_bottleneck: int = 64
    tora_fusion_dim: int = 64
    tora_phase1_epochs: int | None = None
    grace_gram_weight: float = 1.0
    grace_rho: float = 0.05
    grace_beta2: float = 0.999
    consistency_weight: float = 0.0
    eps_schedule: str = "constant"
    eps_start: float = 0.0
    eps_warmup: float = 0.3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the first bad field and what was expected."""
        get_protocol(self.protocol)
        _choice("loss", self.loss, LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("amp", self.amp, AMP)
        _choice("attack_norm", self.attack_norm, NORMS)
        _choice("attack_loss", self.attack_loss, ATTACK_LOSSES)
        for name in ("lr_backbone", "lr_head", "attack_eps"):
            _positive(name, getattr(self, name))
        for name in ("wd_backbone", "wd_head", "beta"):
            _positive(name, getattr(self, name), allow_zero=True)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        for name in ("image_size", "batch_size", "effective_batch", "attack_steps", "val_steps"):
            _count(name, getattr(self, name))
        for name in ("epochs", "val_samples", "max_batches"):
            if getattr(self, name) is not None:
                _count(name, getattr(self, name))
        if self.effective_batch % self.batch_size:
            raise ValueError(
                f"effective_batch ({self.effective_batch}) must be a multiple of batch_size ({self.batch_size})"
            )
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be an int >= 0 or None, got {self.workers!r}")
        self._validate_tora()
        self._validate_options()
        if self.pretrained_path is None and not self.random_init:
            raise ValueError(
                f"backbone {self.backbone!r} needs pretrained_path (its weights file), or random_init=True to "
                "train from scratch (tests and smoke runs)"
            )

    def _validate_tora(self) -> None:
        ok = isinstance(self.tora_lambda, (int, float)) and not isinstance(self.tora_lambda, bool)
        if not ok or not 0.0 <= self.tora_lambda <= 1.0:
            raise ValueError(f"tora_lambda must be a number in [0, 1], got {self.tora_lambda!r}")
        _count("tora_bottleneck", self.tora_bottleneck)
        _count("tora_fusion_dim", self.tora_fusion_dim)
        if self.tora_phase1_epochs is not None:
            _count("tora_phase1_epochs", self.tora_phase1_epochs)
        if self.tora and not 1 <= self.tora_phase1_epochs_resolved < self.num_epochs:
            raise ValueError(
                f"{self.protocol} with {self.num_epochs} epochs needs 1 <= tora_phase1_epochs < epochs (phase 2 "
                f"trains the fusion in the remaining epochs), got tora_phase1_epochs={self.tora_phase1_epochs!r}"
            )

    def _validate_options(self) -> None:
        """GRACE, consistency and the eps schedule: ranges, and the combinations that are not supported."""
        for name in ("grace_gram_weight", "grace_rho", "consistency_weight", "eps_start"):
            _positive(name, getattr(self, name), allow_zero=True)
        for name, value, high_open in (("grace_beta2", self.grace_beta2, True), ("eps_warmup", self.eps_warmup, False)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < 0 or value > 1 or (high_open and value == 1):
                raise ValueError(f"{name} must be a number in [0, 1{')' if high_open else ']'}, got {value!r}")
        _choice("eps_schedule", self.eps_schedule, EPS_SCHEDULES)
        if self.eps_start > self.attack_eps:
            raise ValueError(f"eps_start must lie in [0, attack_eps={self.attack_eps!r}], got {self.eps_start!r}")
        if self.eps_schedule != "constant" and self.loss == "ce":
            raise ValueError(
                f"eps_schedule={self.eps_schedule!r} needs a loss with a training attack, but loss='ce' has none"
            )
        if self.tora:
            for name, used in (("loss", self.grace), ("consistency_weight", self.consistency_weight > 0),
                               ("eps_schedule", self.eps_schedule != "constant")):
                if used:
                    raise ValueError(
                        f"protocol {self.protocol!r} (TORA) does not combine with {name}={getattr(self, name)!r}: "
                        "TORA trains with loss classic_at or trades, consistency_weight=0 and eps_schedule='constant'"
                    )

    @property
    def grace(self) -> bool:
        """Whether the loss is GRACE around Classic AT or TRADES ("classic_at+grace" | "trades+grace")."""
        return self.loss in GRACE_LOSSES

    @property
    def base_loss(self) -> str:
        """The loss without GRACE: "ce" | "classic_at" | "trades"."""
        return self.loss.split("+")[0]

    @property
    def tora(self) -> bool:
        """Whether the protocol trains TORA adapters (rft_fast.train.tora)."""
        return get_protocol(self.protocol).tora

    @property
    def tora_phase1_epochs_resolved(self) -> int:
        """Epochs of TORA's phase 1: the explicit value or half the run, rounded up."""
        return self.tora_phase1_epochs if self.tora_phase1_epochs is not None else math.ceil(self.num_epochs / 2)

    @property
    def num_epochs(self) -> int:
        """The epochs to run: the explicit value or the protocol's."""
        return self.epochs if self.epochs is not None else get_protocol(self.protocol).epochs

    @property
    def linear_probe(self) -> bool:
        return get_protocol(self.protocol).linear_probe

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step."""
        return self.effective_batch // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hparams(self) -> dict[str, Any]:
        """The settings that shape the trained model, beyond its identity (backbone, dataset, protocol, loss)
        and where or how fast it ran: what the results store keys measurements by."""
        skip = _IDENTITY | _RUNTIME | self._unused()
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def run_id(self) -> str:
        """A stable 12-hex-digit id of identity + hparams: the same configuration always gets the same id."""
        skip = _RUNTIME | self._unused()
        payload = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def _unused(self) -> set[str]:
        """Fields without effect on this run, left out so that adding them kept every other run's id: TORA's
        outside TORA protocols, GRACE's outside the grace losses, consistency_weight when 0, and the schedule's
        when it is constant."""
        unused = set() if self.tora else set(_TORA_FIELDS)
        if not self.grace:
            unused |= set(_GRACE_FIELDS)
        if self.consistency_weight == 0:
            unused.add("consistency_weight")
        if self.eps_schedule == "constant":
            unused |= set(_SCHEDULE_FIELDS)
        return unused

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Builds a config from a dict (JSON, a grid trial); unknown keys raise a ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def output_dir(self) -> Path | None:
        return Path(self.out_dir) if self.out_dir is not None else None


FIELD_HELP: dict[str, str] = {
    "backbone": "registry name (`rft-fast models` lists them)",
    "dataset": "dataset name (`rft-fast datasets` lists them; 'digits' is built in)",
    "protocol": "FFT-50 | FFT-5 | LP-50 | TORA-<epochs> (robust adapters on a frozen ViT, e.g. TORA-50)",
    "loss": "ce (standard) | classic_at (CE on APGD examples) | trades (CE + beta KL) | classic_at+grace | "
            "trades+grace (GRACE: + Gram feature alignment, curvature-scaled sharpness-aware steps)",
    "data_root": "the dataset's local root folder (not needed for digits)",
    "split_seed": "seed of the train/val/test split (the study: 42)",
    "pretrained_path": "the backbone's weights file (safetensors / .pth; see `rft-fast models convert`)",
    "random_init": "train from random initialization (tests, smoke runs)",
    "image_size": "input resolution (the study: 224 for every backbone)",
    "optimizer": "adamw (betas 0.9, 0.95) | sgd (momentum)",
    "lr_backbone": "backbone learning rate", "lr_head": "head learning rate",
    "wd_backbone": "backbone weight decay (none on biases and norms)", "wd_head": "head weight decay",
    "momentum": "SGD momentum",
    "cosine": "cosine annealing of the learning rates to 0 over the epochs",
    "batch_size": "micro-batch per forward/backward",
    "effective_batch": "samples per optimizer step (gradient accumulation; a multiple of batch_size)",
    "epochs": "epochs (default: the protocol's)",
    "attack_norm": "training attack norm", "attack_eps": "training attack radius (the study: 4/255)",
    "attack_steps": "training attack steps K (APGD)",
    "attack_loss": "ce (the study: APGD-CE for both losses) | kl (original TRADES attack)",
    "beta": "TRADES weight of the KL term",
    "memory_saving": "TRADES recomputes the clean forward pass instead of keeping both graphs",
    "val_steps": "PGD steps of the per-epoch robust validation",
    "val_samples": "stratified validation subset size (default: the whole split)",
    "amp": "auto (bf16 autocast on GPU) | bf16 | none",
    "channels_last": "channels_last memory format (default: on GPU)",
    "device": "cpu | cuda | cuda:N (default: cuda when visible)",
    "workers": "data-loading worker processes (default: automatic)",
    "seed": "training seed (initialization, data order, augmentation)",
    "max_batches": "at most this many micro-batches per epoch (smoke runs)",
    "out_dir": "where checkpoint.pt, metrics.jsonl and config.json go (resumed when present)",
    "tora_lambda": "TORA phase 2: weight of the robust loss, lambda L_ROB + (1 - lambda) L_ACC, in [0, 1]",
    "tora_bottleneck": "TORA: hidden width of each adapter (psi_A, psi_R)",
    "tora_fusion_dim": "TORA: width of the fusion gate's query/key projections",
    "tora_phase1_epochs": "TORA: epochs of phase 1, the adapters (default: half the epochs, rounded up)",
    "grace_gram_weight": "GRACE losses: weight of the Gram alignment of clean, adversarial and shifted features",
    "grace_rho": "GRACE losses: radius of the curvature-scaled sharpness-aware perturbation (0: none)",
    "grace_beta2": "GRACE losses: EMA decay of the squared gradients (the curvature estimate), in [0, 1)",
    "consistency_weight": "weight of the KL consistency between two shifted views (0: off; any loss)",
    "eps_schedule": "training attack radius over the steps: constant | linear | cosine (ramp eps_start -> attack_eps)",
    "eps_start": "radius at the first step of a linear/cosine eps_schedule, in [0, attack_eps] (0: clean)",
    "eps_warmup": "fraction of the run's optimizer steps the eps ramp lasts, in [0, 1]",
}


_IDENTITY = {"backbone", "dataset", "protocol", "loss"}
_RUNTIME = {"data_root", "pretrained_path", "device", "workers", "out_dir"}
_TORA_FIELDS = ("tora_lambda", "tora_bottleneck", "tora_fusion_dim", "tora_phase1_epochs")
_GRACE_FIELDS = ("grace_gram_weight", "grace_rho", "grace_beta2")
_SCHEDULE_FIELDS = ("eps_schedule", "eps_start", "eps_warmup")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
