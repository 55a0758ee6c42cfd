"""TrainConfig: one fine-tuning run (backbone, dataset, protocol, loss, hyperparameters) as a typed record.

Defaults are the study's setting (docs/study.md): AdamW betas (0.9, 0.95), separate lr / weight decay for
backbone and head, no decay on biases and norms, effective batch 1024 by gradient accumulation, training
attack APGD-10 Linf 4/255 without random start, TRADES beta 1, per-epoch validation with PGD-10.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rft_fast.checks import suggest
from rft_fast.models.normalization import DEFAULT_NORMALIZATION
from rft_fast.train.attack_registry import ATTACK_REGISTRY
from rft_fast.train.fields import (  # noqa: F401 (re-exported: the grid spec and the CLI read them here)
    AMP,
    ATTACK_LOSSES,
    ATTACKS,
    EPS_SCHEDULES,
    FIELD_HELP,
    FIELD_RULES,
    LOSSES,
    MAX_EPOCHS,
    OPTIMIZERS,
    REPORTED_METRICS,
    SEED_MAX,
)
from rft_fast.train.loss_registry import loss_only_fields, loss_spec
from rft_fast.train.protocols import Protocol, get_protocol, protocol_only_fields


@dataclass
class TrainConfig:
    """Everything one run needs; `fit(config)` trains it. Paths are strings so the config is JSON data.

    Args (groups):
        backbone, dataset, protocol ("FFT-50" | "FFT-5" | "LP-50" | "TORA-<epochs>", or any registered in
            rft_fast.train.protocols.PROTOCOLS), loss ("ce" | "classic_at" | "trades" | "classic_at+grace" |
            "trades+grace", or any registered in rft_fast.train.loss_registry.LOSS_REGISTRY).
        data_root: the dataset's local root (None for the built-in "digits"); split_seed: the study's 42.
        pretrained_path: the backbone's weights file; None (default) loads its hub weights (rft_fast.models.hub:
            HF_HOME / HF_HUB_OFFLINE; the robust checkpoints need the file); random_init=True trains from
            scratch (tests only; not with pretrained_path).
        normalization: the mean/std inside the model (rft_fast.models.normalization): "pretrained" (default,
            timm's config; then left out of hparams / run_id) | "study" (the study's rule: CLIP's for names
            containing "laion", ImageNet's otherwise).
        image_size: training and validation resolution (the study resizes every dataset to 224).
        optimizer "adamw" (betas (0.9, 0.95)) | "sgd" (momentum); lr_* / wd_*: per group; cosine: anneal
            to 0 over the epochs.
        batch_size: micro-batch on the device; effective_batch: samples per optimizer step (gradient
            accumulation, a multiple of batch_size).
        epochs: None uses the protocol's.
        attack_*: the training attack (APGD, K steps, no random start, first step 2 eps); attack_loss "ce"
            (the study: both losses train on APGD-CE examples) or "kl" (APGD-KL; not the original TRADES
            attack, which is attack="trades-pgd"); beta: TRADES weight;
            memory_saving: the recomputing TRADES.
        val_steps: PGD steps of the per-epoch robust validation (at attack_eps); val_samples: stratified
            validation subset size (None: the whole split).
        amp: the autocast of the training and validation passes, attacks included (rft_fast.precision): "auto"
            (bf16 where the device has native bf16: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX; float32 elsewhere) |
            "bf16" | "fp16" (float16 with loss scaling, torch.amp.GradScaler; not with the sharpness-aware losses) |
            "none" (float32). Resolved once per run and kept in the checkpoint: a resumed run keeps it.
        channels_last: None = on GPU.
        compile: torch.compile the model the training and validation passes run (default False; then left out of
            hparams / run_id; not with the sharpness-aware losses); the checkpoint holds the eager model's weights.
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
        attack: the training attack (rft_fast.train.attack_registry): "apgd" (default, the study's; then left out
            of hparams / run_id) | "trades-pgd" (the original TRADES attack, Linf).
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
    attack: str = "apgd"
    normalization: str = "pretrained"
    compile: bool = False

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
        self.protocol_spec.recipe.check(self)
        self._validate_options()
        if self.pretrained_path is not None and self.random_init:
            raise ValueError(
                f"pretrained_path ({self.pretrained_path!r}) and random_init=True exclude each other: give the "
                "weights file, random_init=True, or neither (hub weights)"
            )

    def _validate_options(self) -> None:
        """The training attack against the norm, fp16 and compile against the loss, consistency and the eps
        schedule: the combinations that are not supported."""
        norms = ATTACK_REGISTRY.get(self.attack).norms
        if self.attack_norm not in norms:
            raise ValueError(f"attack={self.attack!r} supports attack_norm in {list(norms)}, got {self.attack_norm!r}")
        if self.eps_start > self.attack_eps:
            raise ValueError(f"eps_start must lie in [0, attack_eps={self.attack_eps!r}], got {self.eps_start!r}")
        if self.amp == "fp16" and loss_spec(self.loss).sharpness_aware:
            raise ValueError(
                f"amp='fp16' does not combine with loss={self.loss!r}: loss scaling unscales and checks each optimizer "
                "step's gradient once, and the sharpness-aware step computes two; use amp 'bf16' or 'none'"
            )
        if self.compile and loss_spec(self.loss).sharpness_aware:
            raise ValueError(
                f"compile=True does not combine with loss={self.loss!r}: its feature alignment calls the model's "
                "parts (rft_fast.regularizers.features_and_logits), which a compiled module does not expose"
            )
        if self.eps_schedule != "constant" and not loss_spec(self.loss).uses_attack:
            raise ValueError(
                f"eps_schedule={self.eps_schedule!r} needs a loss with a training attack, but loss={self.loss!r} has none"
            )

    @property
    def protocol_spec(self) -> Protocol:
        """The protocol's registry entry (rft_fast.train.protocols)."""
        return get_protocol(self.protocol)

    @property
    def grace(self) -> bool:
        """Whether the loss steps sharpness-aware (GRACE: "classic_at+grace" | "trades+grace")."""
        return loss_spec(self.loss).sharpness_aware

    @property
    def tora(self) -> bool:
        """Whether the protocol trains TORA adapters (rft_fast.train.tora)."""
        return self.protocol_spec.tora

    @property
    def tora_phase1_epochs_resolved(self) -> int:
        """Epochs of TORA's phase 1: the explicit value or half the run, rounded up."""
        return self.tora_phase1_epochs if self.tora_phase1_epochs is not None else math.ceil(self.num_epochs / 2)

    @property
    def num_epochs(self) -> int:
        """The epochs to run: the explicit value or the protocol's."""
        return self.epochs if self.epochs is not None else self.protocol_spec.epochs

    @property
    def linear_probe(self) -> bool:
        return self.protocol_spec.linear_probe

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
        """Fields without effect on this run, left out so that adding them kept every other run's id: a protocol's
        own fields (TORA's) outside it, a loss's own fields (GRACE's) outside it, consistency_weight when 0, the
        schedule's when it is constant, and attack, normalization and compile when they are the default."""
        unused = (protocol_only_fields() - set(self.protocol_spec.recipe.fields)) | (
            loss_only_fields() - set(loss_spec(self.loss).fields)
        )
        if self.consistency_weight == 0:
            unused.add("consistency_weight")
        if self.eps_schedule == "constant":
            unused |= set(_SCHEDULE_FIELDS)
        if self.attack == _DEFAULT_ATTACK:
            unused.add("attack")
        if self.normalization == _DEFAULT_NORMALIZATION:
            unused.add("normalization")
        if not self.compile:
            unused.add("compile")
        return unused

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
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


_REQUIRED = ("backbone", "dataset")

_IDENTITY = {"backbone", "dataset", "protocol", "loss"}
_RUNTIME = {"data_root", "pretrained_path", "device", "workers", "out_dir"}
_SCHEDULE_FIELDS = ("eps_schedule", "eps_start", "eps_warmup")
_DEFAULT_ATTACK = "apgd"
_DEFAULT_NORMALIZATION = DEFAULT_NORMALIZATION
