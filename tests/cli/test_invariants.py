"""What a refactor must not change: run ids and hparams of existing configurations (hard-coded as computed
before the registries existed) and the CLI's flags, subcommands, choices and defaults (tests/data snapshot)."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest
from surface import cli_surface

from rft_fast.cli import build_parser
from rft_fast.train.config import TrainConfig

_DIGITS = {"backbone": "resnet18", "dataset": "digits", "random_init": True}
# (config fields, run_id, number of hparams) as computed at 86fbc94, before the registries.
RUN_IDS = [
    ({**_DIGITS}, "703aaef47e16", 25),
    ({**_DIGITS, "loss": "trades", "protocol": "LP-50", "lr_head": 0.01}, "fcc01b7561af", 25),
    (
        {
            "backbone": "vit_small_patch16_224",
            "dataset": "cifar10",
            "pretrained_path": "/w.safetensors",
            "protocol": "TORA-10",
            "loss": "trades",
            "tora_lambda": 0.3,
        },
        "aa0ace58169a",
        29,
    ),
    ({**_DIGITS, "loss": "trades+grace", "grace_rho": 0.1}, "7968603e31e5", 28),
    (
        {
            **_DIGITS,
            "loss": "classic_at",
            "eps_schedule": "cosine",
            "consistency_weight": 0.5,
            "attack_loss": "kl",
            "attack_norm": "L2",
            "attack_eps": 0.5,
        },
        "29149dd5d614",
        29,
    ),
    ({**_DIGITS, "loss": "ce", "protocol": "FFT-5", "epochs": 3, "optimizer": "sgd"}, "e93d6f75184b", 25),
]
# sha1 of the default configuration's hparams as sorted JSON (the store keys rows by them).
DEFAULT_HPARAMS_SHA = "747f27e4919a58715b1b25e8cf69d629665e4a48"


@pytest.mark.parametrize("fields,run_id,count", RUN_IDS)
def test_run_ids_and_hparams_are_unchanged(fields: dict, run_id: str, count: int) -> None:
    config = TrainConfig(**fields)
    assert config.run_id() == run_id
    assert len(config.hparams()) == count


def test_default_hparams_are_unchanged() -> None:
    hparams = TrainConfig(**_DIGITS).hparams()
    assert hashlib.sha1(json.dumps(hparams, sort_keys=True).encode()).hexdigest() == DEFAULT_HPARAMS_SHA


def test_every_cli_flag_subcommand_choice_and_default_is_kept() -> None:
    before = json.loads((Path(__file__).parent / "cli_surface.json").read_text())
    now = cli_surface(build_parser())
    lost = [entry for entry in before if entry not in now]
    assert not lost, f"flags changed or removed: {lost}"


# The public API the README lists (its "Public API" section), module -> names.
PUBLIC_API = {
    "rft_fast.ops": ["project", "pgd_step", "apgd_step", "trades_kl", "trades_objective", "backends"],
    "rft_fast.attacks": ["APGD", "PGD", "FGSMRS", "NonFiniteError"],
    "rft_fast.losses": ["ClassicATLoss", "TRADESLoss"],
    "rft_fast.reference": ["project", "pgd_step", "apgd_step", "trades_kl", "pgd_attack", "apgd_attack", "train_step"],
    "rft_fast.models": [
        "create",
        "list_backbones",
        "get",
        "format_table",
        "register",
        "BackboneSpec",
        "convert_checkpoint",
        "list_timm",
        "fetch",
        "study_differences",
    ],
    "rft_fast.data": [
        "build",
        "lookup",
        "download",
        "loader",
        "train_batches",
        "to_device",
        "stratified_subset",
        "DATASETS",
    ],
    "rft_fast.precision": ["resolve", "features"],
    "rft_fast.train": ["TrainConfig", "fit", "load_trained"],
    "rft_fast.train.schedule": ["EpsSchedule"],
    "rft_fast.train.grace": ["CurvatureSAM"],
    "rft_fast.regularizers": ["GraceLoss", "ConsistencyLoss", "Shift", "gram_alignment_loss"],
    "rft_fast.eval": ["evaluate", "EvalSettings"],
    "rft_fast.eval.entry": ["evaluate_checkpoint"],
    "rft_fast.eval.smoothing": ["certify"],
    "rft_fast.results": ["Store", "Measurement", "to_csv", "to_json", "format_table"],
    "rft_fast.results.importing": ["import_csv"],
    "rft_fast.grid": ["load_spec", "expand", "search_space", "plan", "read_bench"],
    "rft_fast.report": ["write", "borda", "size_medals", "trades_vs_classic", "tier1_odds"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_the_readme_public_api_is_importable(module: str) -> None:
    imported = importlib.import_module(module)
    assert [name for name in PUBLIC_API[module] if not hasattr(imported, name)] == []
