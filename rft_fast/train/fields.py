"""TrainConfig's fields as data: each field's rule (type and range, rft_fast.checks.Rule), its help text (the CLI's
`rft-fast train --help` reads FIELD_HELP) and the choices, the loss and training-attack choices read from their
registries at each check (an entry registered at run time is accepted)."""

from __future__ import annotations

from rft_fast.checks import LiveChoices, Rule
from rft_fast.models.normalization import NORMALIZATIONS as MODEL_NORMALIZATIONS
from rft_fast.precision import AMP
from rft_fast.study import NORMS
from rft_fast.train.attack_registry import ATTACK_REGISTRY
from rft_fast.train.loss_registry import LOSS_REGISTRY

LOSSES = LiveChoices(LOSS_REGISTRY.names)  # "ce" | "classic_at" | "trades" | "classic_at+grace" | "trades+grace" | ...
ATTACKS = LiveChoices(ATTACK_REGISTRY.names)  # "apgd" | "trades-pgd" | ...
EPS_SCHEDULES = ("constant", "linear", "cosine")
OPTIMIZERS = ("adamw", "sgd")
ATTACK_LOSSES = ("ce", "kl")
NORMALIZATIONS = LiveChoices(MODEL_NORMALIZATIONS.keys)  # "pretrained" | "study" | ... (models.normalization)
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


_HELP: dict[str, str] = {
    "backbone": "registry name (`rft-fast models` lists them)",
    "dataset": "dataset name (`rft-fast datasets` lists them; 'digits' is built in), or your own data as "
    "folder:<dir> | csv:<file>",
    "protocol": "FFT-50 | FFT-5 | LP-50 | TORA-<epochs> (robust adapters on a frozen ViT, e.g. TORA-50)",
    "loss": "ce (standard) | classic_at (CE on APGD examples) | trades (CE + beta KL) | classic_at+grace | "
    "trades+grace (GRACE: + Gram feature alignment, curvature-scaled sharpness-aware steps)",
    "data_root": "the dataset's local root folder (not needed for digits)",
    "split_seed": "seed of the train/val/test split (the study: 42)",
    "pretrained_path": "the backbone's weights file (safetensors / .pth; see `rft-fast models convert`); default: "
    "its hub weights (`rft-fast models fetch` caches them for offline runs)",
    "random_init": "train from random initialization (tests, smoke runs)",
    "image_size": "input resolution (the study: 224 for every backbone)",
    "optimizer": "adamw (betas 0.9, 0.95) | sgd (momentum)",
    "lr_backbone": "backbone learning rate",
    "lr_head": "head learning rate",
    "wd_backbone": "backbone weight decay (none on biases and norms)",
    "wd_head": "head weight decay",
    "momentum": "SGD momentum",
    "cosine": "cosine annealing of the learning rates to 0 over the epochs",
    "batch_size": "micro-batch per forward/backward",
    "effective_batch": "samples per optimizer step (gradient accumulation; a multiple of batch_size)",
    "epochs": "epochs (default: the protocol's)",
    "attack_norm": "training attack norm",
    "attack_eps": "training attack radius (the study: 4/255; at most 1 under Linf)",
    "attack_steps": "training attack steps K (APGD)",
    "attack_loss": "APGD's loss: ce (the study: APGD-CE for both losses) | kl (APGD-KL on TRADES' KL; not the original "
    "TRADES attack, which is --attack trades-pgd)",
    "beta": "TRADES weight of the KL term",
    "memory_saving": "TRADES recomputes the clean forward pass instead of keeping both graphs",
    "val_steps": "PGD steps of the per-epoch robust validation",
    "val_samples": "stratified validation subset size (default: the whole split)",
    "amp": "auto (bf16 where the device has native bf16: Ampere+ GPUs, CPUs with AVX512-BF16 / AMX; else none) | "
    "bf16 | fp16 (with loss scaling; not with the +grace losses) | none (float32)",
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
    "attack": "training attack: apgd (the study's: APGD, attack_steps, attack_loss) | trades-pgd (the original TRADES "
    "attack, Linf: KL sign steps of 0.007/0.031 attack_eps from x + 0.001 N(0, 1); official: attack_eps "
    "0.031, 10 steps)",
    "normalization": "mean/std inside the model: pretrained (timm's config for the weights) | study (the study's "
    "rule: CLIP's if the name contains 'laion', else ImageNet's)",
    "compile": "torch.compile the model the training and validation passes (attacks included) run",
}


_SEED = Rule(int, 0, SEED_MAX)
_WEIGHT = Rule(float, 0, 1000)  # loss weights: beta, grace_gram_weight, consistency_weight
# The type and range of every field, checked by TrainConfig.validate (a field without an entry fails every
# construction: add one with the field). Ranges are generous but keep out the absurd (a typo, 1e15).
FIELD_RULES: dict[str, Rule] = {
    "backbone": Rule(str),
    "dataset": Rule(str),
    "protocol": Rule(str),  # then get_protocol: FFT-50 | FFT-5 | LP-50 | TORA-<epochs>
    "loss": Rule(str, choices=LOSSES),  # the loss registry's names, read at each check
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
    "attack": Rule(str, choices=ATTACKS),  # the training-attack registry's names, read at each check
    "normalization": Rule(str, choices=NORMALIZATIONS),
    "compile": Rule(bool),
}
# Each field's help with its range (`rft-fast train --help`).
FIELD_HELP: dict[str, str] = {name: FIELD_RULES[name].help(text) for name, text in _HELP.items()}
