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
from typing import Any, Mapping

from rft_fast.checks import Rule, suggest
from rft_fast.study import NORMS
from rft_fast.train.protocols import get_protocol

LOSSES = ("ce", "classic_at", "trades", "classic_at+grace", "trades+grace")
GRACE_LOSSES = ("classic_at+grace", "trades+grace")
EPS_SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("adamw", "sgd")
AMP = ("auto", "bf16", "none")
ATTACK_LOSSES = ("ce", "kl")
MAX_EPOCHS = 10_000  # epochs of one run, explicit or the protocol's (TORA-<epochs> names any count)
SEED_MAX = 2**32 - 1  # seeds are ints in [0, 2**32): NumPy's seed range
# The per-epoch metrics `fit` reports (rft_fast.train.loop: the rows of metrics.jsonl, the callback's argument, what
# Tune's ASHA ranks trials by) that say how good a trial is, each with the direction that is better. The grid spec
# refuses an asha.metric that is not listed, or a mode against its direction.
REPORTED_METRICS: dict[str, str] = {
    "val_loss": "min",  # the robust validation objective (the study's selection metric)
    "val_pgd_acc": "max",  # accuracy under the PGD validation attack
    "val_clean_acc": "max",
    "train_loss": "min",
}


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
        """Raises ValueError naming the first bad field, the value given and what was expected: every field
        against its FIELD_RULES entry (type and range), then the rules between fields."""
        for f in fields(self):
            FIELD_RULES[f.name].check(f.name, getattr(self, f.name))
        get_protocol(self.protocol)
        if self.num_epochs > MAX_EPOCHS:
            raise ValueError(f"protocol {self.protocol!r} runs {self.num_epochs} epochs; at most {MAX_EPOCHS}")
        if self.effective_batch % self.batch_size:
            raise ValueError(
                f"effective_batch ({self.effective_batch}) must be a multiple of batch_size ({self.batch_size})"
            )
        if self.attack_norm == "Linf" and self.attack_eps > 1:
            raise ValueError(
                f"attack_eps must be <= 1 under attack_norm 'Linf' (images lie in [0, 1]; the study's is 4/255), "
                f"got {self.attack_eps!r}"
            )
        self._validate_tora()
        self._validate_options()
        if self.pretrained_path is None and not self.random_init:
            raise ValueError(
                f"backbone {self.backbone!r} needs pretrained_path (its weights file), or random_init=True to "
                "train from scratch (tests and smoke runs)"
            )

    def _validate_tora(self) -> None:
        if self.tora and not 1 <= self.tora_phase1_epochs_resolved < self.num_epochs:
            raise ValueError(
                f"{self.protocol} with {self.num_epochs} epochs needs 1 <= tora_phase1_epochs < epochs (phase 2 "
                f"trains the fusion in the remaining epochs), got tora_phase1_epochs={self.tora_phase1_epochs!r}"
            )

    def _validate_options(self) -> None:
        """GRACE, consistency and the eps schedule: the combinations that are not supported."""
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
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Builds a config from a dict (JSON, a grid trial, a checkpoint's "config"); a field the dict lacks takes
        its default (a checkpoint written before the field existed ran with it). Unknown or missing fields raise a
        ValueError naming them, bad values one naming the field (`validate`)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a TrainConfig is built from a mapping of its fields, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            hint = suggest(unknown[0], known) if len(unknown) == 1 else ""
            raise ValueError(f"unknown TrainConfig field(s) {unknown}{hint}; known: {known}")
        missing = [name for name in _REQUIRED if name not in values]
        if missing:
            raise ValueError(f"missing TrainConfig field(s) {missing}")
        return cls(**values)

    def output_dir(self) -> Path | None:
        return Path(self.out_dir) if self.out_dir is not None else None


_HELP: dict[str, str] = {
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
    "attack_norm": "training attack norm", "attack_eps": "training attack radius (the study: 4/255; at most 1 under Linf)",
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
    "tora_lambda": "TORA phase 2: weight of the robust loss, lambda L_ROB + (1 - lambda) L_ACC",
    "tora_bottleneck": "TORA: hidden width of each adapter (psi_A, psi_R)",
    "tora_fusion_dim": "TORA: width of the fusion gate's query/key projections",
    "tora_phase1_epochs": "TORA: epochs of phase 1, the adapters (default: half the epochs, rounded up)",
    "grace_gram_weight": "GRACE losses: weight of the Gram alignment of clean, adversarial and shifted features",
    "grace_rho": "GRACE losses: radius of the curvature-scaled sharpness-aware perturbation (0: none)",
    "grace_beta2": "GRACE losses: EMA decay of the squared gradients (the curvature estimate)",
    "consistency_weight": "weight of the KL consistency between two shifted views (0: off; any loss)",
    "eps_schedule": "training attack radius over the steps: constant | linear | cosine (ramp eps_start -> attack_eps)",
    "eps_start": "radius at the first step of a linear/cosine eps_schedule, at most attack_eps (0: clean)",
    "eps_warmup": "fraction of the run's optimizer steps the eps ramp lasts",
}


_SEED = Rule(int, 0, SEED_MAX)
_WEIGHT = Rule(float, 0, 1000)  # loss weights: beta, grace_gram_weight, consistency_weight
# The type and range of every field, checked by TrainConfig.validate (a field without an entry fails every
# construction: add one with the field). Ranges are generous but keep out the absurd (a typo, 1e15).
FIELD_RULES: dict[str, Rule] = {
    "backbone": Rule(str),
    "dataset": Rule(str),
    "protocol": Rule(str),  # then get_protocol: FFT-50 | FFT-5 | LP-50 | TORA-<epochs>
    "loss": Rule(str, choices=LOSSES),
    "data_root": Rule(str, optional=True),
    "split_seed": _SEED,
    "pretrained_path": Rule(str, optional=True),
    "random_init": Rule(bool),
    "image_size": Rule(int, 8, 1024),  # 8: rft_fast.data.registry.MIN_IMAGE_SIZE
    "optimizer": Rule(str, choices=OPTIMIZERS),
    "lr_backbone": Rule(float, 0, 10, open_low=True),
    "lr_head": Rule(float, 0, 10, open_low=True),
    "wd_backbone": Rule(float, 0, 10),
    "wd_head": Rule(float, 0, 10),
    "momentum": Rule(float, 0, 1, open_high=True),
    "cosine": Rule(bool),
    "batch_size": Rule(int, 1, 65_536),
    "effective_batch": Rule(int, 1, 1_048_576),
    "epochs": Rule(int, 1, MAX_EPOCHS, optional=True),
    "attack_norm": Rule(str, choices=NORMS),
    "attack_eps": Rule(float, 0, 10_000, open_low=True),  # and <= 1 under Linf (validate)
    "attack_steps": Rule(int, 1, 1000),
    "attack_loss": Rule(str, choices=ATTACK_LOSSES),
    "beta": _WEIGHT,
    "memory_saving": Rule(bool),
    "val_steps": Rule(int, 1, 1000),
    "val_samples": Rule(int, 1, 10_000_000, optional=True),
    "amp": Rule(str, choices=AMP),
    "channels_last": Rule(bool, optional=True),
    "device": Rule(str, pattern=r"cpu|cuda(:\d+)?", pattern_text="'cpu', 'cuda' or 'cuda:N'", optional=True),
    "workers": Rule(int, 0, 256, optional=True),
    "seed": _SEED,
    "max_batches": Rule(int, 1, 10_000_000, optional=True),
    "out_dir": Rule(str, optional=True),
    "tora_lambda": Rule(float, 0, 1),
    "tora_bottleneck": Rule(int, 1, 16_384),
    "tora_fusion_dim": Rule(int, 1, 16_384),
    "tora_phase1_epochs": Rule(int, 1, MAX_EPOCHS, optional=True),
    "grace_gram_weight": _WEIGHT,
    "grace_rho": Rule(float, 0, 10),
    "grace_beta2": Rule(float, 0, 1, open_high=True),
    "consistency_weight": _WEIGHT,
    "eps_schedule": Rule(str, choices=EPS_SCHEDULES),
    "eps_start": Rule(float, 0, 10_000),  # and <= attack_eps (validate)
    "eps_warmup": Rule(float, 0, 1),
}
# Each field's help with its range (`rft-fast train --help`).
FIELD_HELP: dict[str, str] = {name: FIELD_RULES[name].help(text) for name, text in _HELP.items()}

_REQUIRED = ("backbone", "dataset")

_IDENTITY = {"backbone", "dataset", "protocol", "loss"}
_RUNTIME = {"data_root", "pretrained_path", "device", "workers", "out_dir"}
_TORA_FIELDS = ("tora_lambda", "tora_bottleneck", "tora_fusion_dim", "tora_phase1_epochs")
_GRACE_FIELDS = ("grace_gram_weight", "grace_rho", "grace_beta2")
_SCHEDULE_FIELDS = ("eps_schedule", "eps_start", "eps_warmup")

