"""TrainConfig's strict types and ranges: each field has one Rule (FIELD_RULES), every error names the field, the
value given and what was expected; old config dicts (checkpoints) still load. No training here."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rft_fast.checks import Rule
from rft_fast.data.registry import MIN_IMAGE_SIZE
from rft_fast.train import TrainConfig
from rft_fast.train.config import FIELD_HELP, FIELD_RULES, MAX_EPOCHS, REPORTED_METRICS, SEED_MAX

BASE = {"backbone": "tiny_resnet", "dataset": "digits", "random_init": True}


def build(**changes):
    return TrainConfig(**{**BASE, **changes})


def test_every_field_has_a_rule_and_a_help_with_its_range():
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(FIELD_RULES) == names
    assert list(FIELD_HELP) == names
    assert FIELD_HELP["image_size"].endswith("; an int >= 8 and <= 1024")
    assert FIELD_HELP["lr_head"].endswith("; a number in (0, 10]")
    assert "null" not in FIELD_HELP["epochs"]  # the CLI cannot pass null
    assert FIELD_RULES["image_size"].low == MIN_IMAGE_SIZE  # the smallest image the data loaders build


def test_defaults_obey_the_rules():
    config = build()
    for f in dataclasses.fields(TrainConfig):
        assert FIELD_RULES[f.name].problem(f.name, getattr(config, f.name)) is None, f.name


@pytest.mark.parametrize(
    "field, value, message",
    [
        # booleans: only true / false
        (
            "cosine",
            "false",
            "cosine must be true or false, got 'false' (str); a boolean is true or false (unquoted in YAML)",
        ),
        ("memory_saving", "no", "memory_saving must be true or false, got 'no' (str)"),
        ("channels_last", "off", "channels_last must be true or false or null, got 'off' (str)"),
        ("random_init", 1, "random_init must be true or false, got 1 (int)"),
        ("cosine", 0, "cosine must be true or false, got 0 (int)"),
        # ints: no floats, no bools, in range
        ("image_size", 1e6, "image_size must be an int >= 8 and <= 1024, got 1000000.0 (float)"),
        ("image_size", 10**6, "image_size must be an int >= 8 and <= 1024, got 1000000"),
        ("image_size", 64.0, "got 64.0 (float); write 64, without a decimal point or exponent"),
        ("image_size", 4, "image_size must be an int >= 8 and <= 1024, got 4"),
        ("image_size", 10**400, "image_size must be an int >= 8 and <= 1024, got 100000000000000000..."),
        ("lr_head", 10**400, "lr_head must be a number in (0, 10], got 100000000000000000..."),
        ("epochs", 10**9, "epochs must be an int >= 1 and <= 10000 or null, got 1000000000"),
        ("epochs", 0, "epochs must be an int >= 1"),
        ("batch_size", True, "batch_size must be an int >= 1 and <= 65536, got True (bool)"),
        ("batch_size", 70_000, "batch_size must be an int >= 1 and <= 65536, got 70000"),
        ("seed", "abc", "seed must be an int >= 0 and <= 4294967295, got 'abc' (str)"),
        ("seed", 1.5, "seed must be an int >= 0 and <= 4294967295, got 1.5 (float)"),
        ("seed", -1, "seed must be an int >= 0 and <= 4294967295, got -1"),
        ("seed", True, "seed must be an int >= 0 and <= 4294967295, got True (bool)"),
        ("seed", 2**32, "got 4294967296"),
        ("split_seed", None, "split_seed must be an int >= 0 and <= 4294967295, got None (NoneType)"),
        ("workers", -1, "workers must be an int >= 0 and <= 256 or null, got -1"),
        ("workers", 257, "workers must be an int >= 0 and <= 256 or null, got 257"),
        ("attack_steps", 0, "attack_steps must be an int >= 1 and <= 1000"),
        ("val_samples", 0, "val_samples must be an int >= 1 and <= 10000000 or null"),
        ("max_batches", 2.0, "max_batches must be an int"),
        ("tora_bottleneck", 0, "tora_bottleneck must be an int >= 1 and <= 16384"),
        # floats: an int or a float, finite, in range; never a bool or a string
        ("lr_head", 0, "lr_head must be a number in (0, 10], got 0"),
        ("lr_head", 11, "lr_head must be a number in (0, 10], got 11"),
        ("lr_head", "1e-3", "lr_head must be a number in (0, 10], got '1e-3' (str)"),
        ("lr_head", float("nan"), "lr_head must be a number in (0, 10], got nan"),
        ("lr_backbone", True, "lr_backbone must be a number in (0, 10], got True (bool)"),
        ("wd_head", -1e-4, "wd_head must be a number in [0, 10]"),
        ("momentum", 1.0, "momentum must be a number in [0, 1), got 1.0"),
        ("beta", float("inf"), "beta must be a number in [0, 1000], got inf"),
        ("attack_eps", 0.0, "attack_eps must be a number in (0, 10000], got 0.0"),
        ("attack_eps", 2.0, "attack_eps must be <= 1 under attack_norm 'Linf'"),
        ("grace_beta2", 1.0, "grace_beta2 must be a number in [0, 1), got 1.0"),
        ("tora_lambda", 1.5, "tora_lambda must be a number in [0, 1], got 1.5"),
        ("eps_warmup", 1.5, "eps_warmup must be a number in [0, 1], got 1.5"),
        # strings
        (
            "loss",
            "trade",
            "loss must be one of ['ce', 'classic_at', 'trades', 'classic_at+grace', 'trades+grace'], "
            "got 'trade'; did you mean 'trades'?",
        ),
        ("amp", True, "amp must be one of ['auto', 'bf16', 'fp16', 'none'], got True (bool)"),
        ("backbone", "", "backbone must be a non-empty string, got ''"),
        ("out_dir", "x" * 5000, "out_dir must be at most 4096 characters, got 5,000: 'xxxxxxxx"),
        ("dataset", 3, "dataset must be a non-empty string, got 3 (int)"),
        ("device", "cdua", "device must be 'cpu', 'cuda' or 'cuda:N' or null, got 'cdua'"),
        ("data_root", 5, "data_root must be a non-empty string or null, got 5 (int)"),
        ("protocol", "TORA-20000", f"protocol 'TORA-20000' runs 20000 epochs; at most {MAX_EPOCHS}"),
    ],
)
def test_bad_values_name_the_field_the_value_and_what_was_expected(field, value, message):
    with pytest.raises(ValueError) as err:
        build(**{field: value})
    assert message in str(err.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("image_size", 8),
        ("image_size", 1024),
        ("epochs", MAX_EPOCHS),
        ("seed", SEED_MAX),
        ("workers", 0),
        ("workers", 256),
        ("lr_head", 10),
        ("wd_head", 0),
        ("momentum", 0),
        ("attack_eps", 1),
        ("device", "cuda:3"),
        ("channels_last", None),
        ("channels_last", False),
        ("beta", 6),
    ],
)
def test_values_at_the_edges_of_their_range_are_accepted(field, value):
    assert getattr(build(**{field: value}), field) == value


def test_large_radii_are_accepted_under_l2_and_l1():
    assert build(attack_norm="L1", attack_eps=255.0).attack_eps == 255.0
    assert build(attack_norm="L2", attack_eps=3).attack_eps == 3


def test_an_int_for_a_float_field_is_kept_as_given():
    """1 and 1.0 give different run ids (JSON), so a float field keeps an int as written: ids stay stable."""
    config = build(wd_head=0, beta=6)
    assert type(config.wd_head) is int and type(config.beta) is int


def test_from_dict_loads_old_checkpoint_configs():
    """A config dict written before the newer fields existed (TORA, GRACE, consistency, eps schedule) loads with
    their defaults, and the run id it had is kept."""
    old = {
        **BASE,
        "protocol": "FFT-5",
        "loss": "trades",
        "data_root": None,
        "split_seed": 42,
        "pretrained_path": None,
        "image_size": 32,
        "optimizer": "adamw",
        "lr_backbone": 0.0001,
        "lr_head": 0.001,
        "wd_backbone": 0,
        "wd_head": 0.0001,
        "momentum": 0.9,
        "cosine": False,
        "batch_size": 64,
        "effective_batch": 64,
        "epochs": 2,
        "attack_norm": "Linf",
        "attack_eps": 4 / 255,
        "attack_steps": 3,
        "attack_loss": "ce",
        "beta": 1.0,
        "memory_saving": True,
        "val_steps": 3,
        "val_samples": 32,
        "amp": "auto",
        "channels_last": None,
        "device": "cpu",
        "workers": 0,
        "seed": 0,
        "max_batches": 4,
        "out_dir": "/runs/x",
    }
    config = TrainConfig.from_dict(old)
    assert config.eps_schedule == "constant" and config.tora_bottleneck == 64
    assert config.run_id() == TrainConfig.from_dict(config.to_dict()).run_id()
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "values, message",
    [
        ({**BASE, "batchsize": 8}, "unknown TrainConfig field(s) ['batchsize']; did you mean 'batch_size'?"),
        ({"dataset": "digits"}, "missing TrainConfig field(s) ['backbone']"),
        ([("backbone", "x")], "a TrainConfig is built from a mapping of its fields, got list"),
        ({**BASE, "cosine": "false"}, "cosine must be true or false"),
    ],
)
def test_from_dict_errors(values, message):
    with pytest.raises(ValueError) as err:
        TrainConfig.from_dict(values)
    assert message in str(err.value)


def test_rule_wording():
    assert Rule(int, 0, 10, open_high=True).expected() == "an int >= 0 and < 10"
    assert Rule(int, 1).expected() == "an int >= 1"
    assert Rule(float, 0, open_low=True).expected() == "a number > 0"
    assert Rule(float, 1e-6, 1.5, optional=True).expected() == "a number in [1e-06, 1.5] or null"
    assert Rule(float).problem("x", math.inf) == "x must be a finite number, got inf"
    assert Rule(str, choices=("min", "max")).problem("asha.mode", "mix") == (
        "asha.mode must be one of ['min', 'max'], got 'mix'; did you mean 'min'?"
    )
    long = Rule(int).problem("k", "x" * 10_000)
    assert len(long) < 150  # the value is shown cut short


def test_reported_metrics_have_a_direction():
    assert REPORTED_METRICS["val_loss"] == "min" and REPORTED_METRICS["val_pgd_acc"] == "max"
    assert set(REPORTED_METRICS.values()) <= {"min", "max"}
