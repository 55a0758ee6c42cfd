"""The grid spec is strict and checked up front: types and ranges of every key (top level, asha / resources /
eval, fixed / search / axes against TrainConfig's rules), the ASHA metric among those `fit` reports, every
(loss, protocol, axis) combination, the files (`validate`), and every way a YAML file can be wrong. Each error
names the key with its section, the value given and what was expected. No Ray, no training."""

from __future__ import annotations

import dataclasses
import time

import pytest
from helpers import ROOT, spec_from

from rft_fast.grid import spec as spec_module
from rft_fast.grid.spec import ASHA, EvalSpec, Resources, SearchDim, load_spec, validate
from rft_fast.train.config import REPORTED_METRICS

EXAMPLES = ROOT / "examples"
BASE = {
    "backbones": ["deit_tiny_patch16_224.fb_in1k"],
    "losses": ["classic_at"],
    "protocols": ["FFT-5"],
    "datasets": ["digits"],
    "random_init": True,
    "search": {"lr_head": {"loguniform": [1e-6, 1e-1]}, "cosine": {"choice": [True, False]}},
    "budget_minutes": 30,
    "store": "runs/t/results.sqlite",
    "out_dir": "runs/t",
}
YAML = """\
backbones: [deit_tiny_patch16_224.fb_in1k]
losses: [classic_at]
protocols: [FFT-5]
datasets: [digits]
random_init: true
search:
  lr_head: {loguniform: [1e-6, 1e-1]}
budget_minutes: 30
store: runs/t/results.sqlite
out_dir: runs/t
"""


def spec_with(**changes):
    return spec_from(BASE, **changes)


def error_of(**changes) -> str:
    with pytest.raises(ValueError) as err:
        spec_with(**changes)
    return str(err.value)


SEED = "must be an int >= 0 and <= 4294967295"


@pytest.mark.parametrize(
    "changes, message",
    [
        # booleans: true / false only, everywhere
        ({"fixed": {"cosine": "false"}}, "fixed.cosine must be true or false, got 'false' (str)"),
        ({"fixed": {"memory_saving": "no"}}, "fixed.memory_saving must be true or false, got 'no' (str)"),
        ({"fixed": {"channels_last": "off"}}, "fixed.channels_last must be true or false or null, got 'off' (str)"),
        ({"fixed": {"random_init": 1}}, "fixed.random_init: not a TrainConfig field; the grid sets it itself"),
        (
            {"search": {"cosine": {"choice": [True, "false"]}}},
            "search.cosine.choice[1] must be true or false, got 'false'",
        ),
        ({"search": {"cosine": 0}}, "search.cosine must be true or false, got 0 (int)"),
        ({"axes": {"memory_saving": [True, 1]}}, "axes.memory_saving[1] must be true or false, got 1 (int)"),
        ({"random_init": "true"}, "random_init must be true or false, got 'true' (str)"),
        # ints: written as ints, in range
        (
            {"num_samples": 1e15},
            "num_samples must be an int >= 1 and <= 100000 or null, got 1000000000000000.0 (float)",
        ),
        ({"num_samples": 10**15}, "num_samples must be an int >= 1 and <= 100000 or null, got 1000000000000000"),
        ({"num_samples": 8.0}, "got 8.0 (float); write 8, without a decimal point or exponent"),
        ({"fixed": {"image_size": 1e6}}, "fixed.image_size must be an int >= 8 and <= 1024, got 1000000.0 (float)"),
        ({"fixed": {"epochs": 10**9}}, "fixed.epochs must be an int >= 1 and <= 10000 or null, got 1000000000"),
        ({"fixed": {"batch_size": True}}, "fixed.batch_size must be an int >= 1 and <= 65536, got True (bool)"),
        (
            {"axes": {"attack_steps": [3, 1e9]}},
            "axes.attack_steps[1] must be an int >= 1 and <= 1000, got 1000000000.0",
        ),
        (
            {"search": {"batch_size": {"loguniform": [16, 256]}}},
            "search.batch_size: loguniform samples real numbers, but batch_size must be an int >= 1 and <= 65536: list its "
            "values with {choice: [...]}",
        ),
        # seeds
        ({"seed": "abc"}, f"seed {SEED}, got 'abc' (str)"),
        ({"seed": 1.5}, f"seed {SEED}, got 1.5 (float)"),
        ({"seed": -1}, f"seed {SEED}, got -1"),
        ({"seed": True}, f"seed {SEED}, got True (bool)"),
        ({"seed": 2**32}, f"seed {SEED}, got 4294967296"),
        ({"fixed": {"seed": "abc"}}, f"fixed.seed {SEED}, got 'abc' (str)"),
        ({"fixed": {"seed": True}}, f"fixed.seed {SEED}, got True (bool)"),
        ({"search": {"seed": {"choice": [0, -1]}}}, f"search.seed.choice[1] {SEED}, got -1"),
        ({"fixed": {"split_seed": 1.5}}, f"fixed.split_seed {SEED}, got 1.5 (float)"),
        # numbers
        ({"budget_minutes": 1e300}, "budget_minutes must be a number in (0, 525600], got 1e+300"),
        ({"budget_minutes": "30"}, "budget_minutes must be a number in (0, 525600], got '30' (str)"),
        ({"budget_minutes": True}, "budget_minutes must be a number in (0, 525600], got True (bool)"),
        (
            {"search": {"lr_head": {"uniform": [1e-6, 100]}}},
            "search.lr_head.uniform[1] must be a number in (0, 10], got 100",
        ),
        (
            {"search": {"wd_head": {"loguniform": [0, 1e-2]}}},
            "search.wd_head.loguniform[0] must be > 0 (a log scale), got 0",
        ),
        ({"search": {"lr_head": {"choice": [1e-3, 1e-3]}}}, "search.lr_head.choice: a value is listed more than once"),
        # strings
        ({"name": 3}, "name must be a non-empty string, got 3 (int)"),
        ({"store": ""}, "store must be a non-empty string, got ''"),
        ({"weights_dir": 5, "random_init": None}, "weights_dir must be a non-empty string or null, got 5 (int)"),
        ({"backbones": [5]}, "backbones[0] must be a non-empty string, got 5 (int)"),
        ({"losses": ["trade"]}, "losses: unknown loss 'trade'; did you mean 'trades'?"),
        ({"data_roots": {"digits": 5}}, "data_roots.digits must be a non-empty string, got 5 (int)"),
        ({"fixed": {"device": "gpu"}}, "fixed.device must be 'cpu', 'cuda' or 'cuda:N' or null, got 'gpu'"),
        # unknown keys name the nearest known one
        ({"seeds": 1}, "unknown key(s) 'seeds' (did you mean 'seed'?); allowed: ['name'"),
        ({"asha": {"grace": 1}}, "asha: unknown key(s) 'grace' (did you mean 'grace_period'?)"),
        ({"fixed": {"batchsize": 64}}, "fixed.batchsize: not a TrainConfig field (did you mean 'batch_size'?)"),
        ({"search": {"lr_haed": 0.1}}, "search.lr_haed: not a searchable TrainConfig field (did you mean 'lr_head'?)"),
        # sections
        ({"asha": []}, "asha must be a mapping, got [] (list)"),
        ({"fixed": [1]}, "fixed must be a mapping, got [1] (list)"),
        (
            {"asha": {"metric": "val_los"}},
            "asha.metric must be one of ['val_loss', 'val_pgd_acc', 'val_clean_acc', 'train_loss'], got 'val_los'; "
            "did you mean 'val_loss'?",
        ),
        ({"asha": {"metric": "time_total_s"}}, "asha.metric must be one of ['val_loss', 'val_pgd_acc'"),
        (
            {"asha": {"metric": "val_pgd_acc"}},
            "asha.mode must be 'max' for asha.metric 'val_pgd_acc' (higher is better",
        ),
        ({"asha": {"metric": "val_loss", "mode": "max"}}, "asha.mode must be 'min' for asha.metric 'val_loss'"),
        ({"asha": {"grace_period": 0}}, "asha.grace_period must be an int >= 1 and <= 10000, got 0"),
        ({"asha": {"grace_period": 1.5}}, "asha.grace_period must be an int >= 1 and <= 10000, got 1.5 (float)"),
        ({"asha": {"grace_period": True}}, "asha.grace_period must be an int >= 1 and <= 10000, got True (bool)"),
        ({"asha": {"max_t": 1e4}}, "asha.max_t must be an int >= 1 and <= 10000 or null, got 10000.0 (float)"),
        ({"asha": {"reduction_factor": 1e9}}, "asha.reduction_factor must be a number in [1.1, 100], got 1000000000.0"),
        ({"resources": {"cpus_per_trial": 0}}, "resources.cpus_per_trial must be an int >= 1 and <= 1024, got 0"),
        ({"resources": {"gpus_per_trial": "1"}}, "resources.gpus_per_trial must be a number in (0, 64], got '1' (str)"),
        ({"eval": {"n": 1e3}}, "eval.n must be an int >= 1 and <= 1000000, got 1000.0 (float)"),
        ({"eval": {"threats": ["Linf", "Linf"]}}, "eval.threats: a value is listed more than once"),
        ({"eval": {"threats": 5}}, "eval.threats must be a non-empty subset of ['clean', 'Linf'"),
        ({"eval": {"threats": ["linf"]}}, "got ('linf',); did you mean 'Linf'?"),
        # the protocol's epochs and the combinations, each TrainConfig built at load
        ({"protocols": ["TORA-20000"]}, "fixed: protocol 'TORA-20000' runs 20000 epochs; at most 10000"),
        ({"fixed": {"attack_eps": 2.0}}, "fixed: attack_eps must be <= 1 under attack_norm 'Linf'"),
    ],
)
def test_errors_name_the_key_the_value_and_what_was_expected(changes, message):
    assert message in error_of(**changes)


def test_a_combination_that_cannot_train_is_refused_at_load_naming_it():
    message = error_of(protocols=["FFT-5", "TORA-4"], losses=["trades", "trades+grace"])
    assert message.startswith("fixed: protocol 'TORA-4' (TORA) does not combine with loss='trades+grace'")
    assert message.endswith("(loss 'trades+grace', protocol TORA-4)")
    message = error_of(protocols=["FFT-5", "TORA-4"], fixed={"tora_phase1_epochs": 4})
    assert "TORA-4 with 4 epochs needs 1 <= tora_phase1_epochs < epochs" in message
    message = error_of(losses=["ce"], axes={"eps_schedule": ["constant", "linear"]})
    assert message.startswith("axes.eps_schedule: eps_schedule='linear' needs a loss with a training attack")
    message = error_of(search={"eps_start": {"uniform": [0.0, 0.5]}})
    assert message.startswith("search.eps_start: eps_start must lie in [0, attack_eps=")


def test_values_and_sections_that_are_fine():
    spec = spec_with(
        seed=2**32 - 1,
        num_samples=None,
        budget_minutes=525_600,
        asha={"metric": "val_pgd_acc", "mode": "max"},
        fixed={"memory_saving": False, "channels_last": None, "image_size": 1024, "epochs": 10_000},
        eval={"threats": "Linf", "n": 10},
        resources={"gpus_per_trial": 0.25, "cpus_per_trial": 2},
    )
    assert (spec.seed, spec.asha.metric, spec.eval.threats, spec.resources.gpus_per_trial) == (
        2**32 - 1,
        "val_pgd_acc",
        ("Linf",),
        0.25,
    )
    assert spec_with(asha=None, eval=None, fixed=None).asha == ASHA()  # absent or null: the defaults
    assert isinstance(spec_with(budget_minutes=2).budget_minutes, float)


def test_every_reported_metric_can_rank_trials():
    for metric, mode in REPORTED_METRICS.items():
        assert spec_with(asha={"metric": metric, "mode": mode}).asha.metric == metric


def test_the_section_classes_check_themselves():
    with pytest.raises(ValueError, match="asha.metric must be one of"):
        ASHA(metric="loss")
    with pytest.raises(ValueError, match=r"asha.max_t \(2\) must be >= asha.grace_period \(3\)"):
        ASHA(grace_period=3, max_t=2)
    with pytest.raises(ValueError, match="resources.cpus_per_trial must be an int"):
        Resources(cpus_per_trial=2.0)
    with pytest.raises(ValueError, match="eval.threats must be a non-empty subset"):
        EvalSpec(threats=())
    with pytest.raises(ValueError, match=r"search.image_size must be an int >= 8"):
        SearchDim("image_size", "fixed", values=(4,))
    spec = spec_with()
    with pytest.raises(ValueError, match="seed must be an int"):
        dataclasses.replace(spec, seed=-1)  # a spec changed in code is held to the same rules
    with pytest.raises(ValueError, match="pretrained: no hub carries the weights of"):
        dataclasses.replace(spec, random_init=False, backbones=("robust_resnet50",))


# ----------------------------------------------------------------------------------------------- eval: EvalSettings


def test_eval_sets_every_evaluation_setting():
    """The eval section is a full EvalSettings (but seed: the spec's): eps per norm (the others keep the study's),
    severity, the smoothing lists; the grid's evaluation is built from it."""
    from rft_fast.eval import EvalSettings
    from rft_fast.study import STUDY_EPS

    spec = spec_with(
        eval={
            "threats": ["clean", "L2", "corruptions", "smoothing-L2"],
            "eps": {"L2": 0.5},
            "severity": 5,
            "smoothing_sigmas": [0.12, 0.5],
            "smoothing_radii": [0, 0.5],
            "smoothing_n": 1000,
            "subset_seed": 3,
        }
    )
    assert spec.eval.eps == {**STUDY_EPS, "L2": 0.5}
    assert (spec.eval.severity, spec.eval.smoothing_sigmas, spec.eval.smoothing_radii) == (5, (0.12, 0.5), (0.0, 0.5))
    settings = spec.eval.settings(seed=7)
    assert isinstance(settings, EvalSettings) and settings.eps["L2"] == 0.5 and settings.seed == 7
    assert (settings.severity, settings.smoothing_sigmas, settings.smoothing_n, settings.subset_seed) == (
        5,
        (0.12, 0.5),
        1000,
        3,
    )
    assert spec_with(eval={"smoothing_sigmas": 0.5}).eval.smoothing_sigmas == (0.5,)  # one number is a list of one
    assert spec_with().eval.settings() == EvalSettings()  # absent: EvalSettings' defaults


@pytest.mark.parametrize(
    "section, message",
    [
        ({"eps": {"Linf": 0}}, "eval.eps.Linf must be a number > 0, got 0"),
        ({"eps": {"Linf": "4/255"}}, "eval.eps.Linf must be a number > 0, got '4/255' (str)"),
        ({"eps": {"linf": 0.1}}, "eval.eps: unknown norm 'linf'; did you mean 'Linf'?"),
        ({"eps": 0.1}, "eval.eps must map norms ['Linf', 'L2', 'L1'] to radii, got 0.1 (float)"),
        ({"severity": 6}, "eval.severity must be an int >= 1 and <= 5, got 6"),
        ({"severity": 3.0}, "eval.severity must be an int >= 1 and <= 5, got 3.0 (float); write 3"),
        ({"smoothing_sigmas": [0.25, -1]}, "eval.smoothing_sigmas[1] must be a number > 0, got -1"),
        ({"smoothing_sigmas": [0.25, 0.25]}, "eval.smoothing_sigmas: a value is listed more than once"),
        ({"smoothing_sigmas": []}, "eval.smoothing_sigmas must be a non-empty list of numbers"),
        ({"smoothing_radii": [True]}, "eval.smoothing_radii[0] must be a number >= 0, got True (bool)"),
        ({"smoothing_alpha": 1}, "eval.smoothing_alpha must be a number in (0, 1), got 1"),
        ({"workers": -1}, "eval.workers must be an int >= 0 and <= 256 or null, got -1"),
        ({"seed": 3}, "eval.seed: set by the grid itself: the spec's top-level seed seeds the evaluation"),
        ({"sigmas": [0.5]}, "eval: unknown key(s) 'sigmas'"),
    ],
)
def test_eval_settings_are_checked_with_their_rules(section, message):
    assert message in error_of(eval=section)


# ----------------------------------------------------------------------------------------------- validate


def test_validate_examples_and_specs_changed_in_code(tmp_path, monkeypatch):
    assert validate(load_spec(EXAMPLES / "quick.yaml")) == []
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache, offline (tests/conftest.py)
    study = validate(load_spec(EXAMPLES / "study.yaml"))  # placeholders: no data, no weights here
    roots = [p for p in study if p.startswith("data_roots.")]
    files = [p for p in study if p.startswith("pretrained.robust_") and "not found at /weights/" in p]
    hub = [p for p in study if p.startswith("backbones: hub weights of") and "rft-fast models fetch --spec" in p]
    assert (len(roots), len(files), len(hub), len(study)) == (6, 5, 35, 46)
    assert validate(load_spec(EXAMPLES / "study.yaml"), paths=False) == []
    spec = spec_with(protocols=["FFT-5", "TORA-4"])
    changed = dataclasses.replace(spec, fixed={"tora_phase1_epochs": 4}, losses=("classic_at", "trades"))
    problems = validate(changed)
    assert len(problems) == 2 and all("tora_phase1_epochs < epochs" in p for p in problems)
    assert problems[1].endswith("(loss 'trades', protocol TORA-4)")


def test_validate_checks_the_paths(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "deit_tiny_patch16_224.fb_in1k.safetensors").write_bytes(b"")
    (tmp_path / "mobilevit.safetensors").mkdir()  # a folder where a file is expected
    (tmp_path / "pets").mkdir()
    (tmp_path / "store.sqlite").mkdir()
    (tmp_path / "out").write_text("")
    spec = spec_with(
        random_init=None,
        weights_dir=str(tmp_path / "weights"),
        backbones=["deit_tiny_patch16_224.fb_in1k", "mobilevit_s.cvnets_in1k", "resnet50.a1_in1k"],
        pretrained={"mobilevit_s.cvnets_in1k": str(tmp_path / "mobilevit.safetensors")},
        datasets=["digits", "oxford_pets", "uc_merced"],
        data_roots={"oxford_pets": str(tmp_path / "pets"), "uc_merced": str(tmp_path / "nope")},
        store=str(tmp_path / "store.sqlite"),
        out_dir=str(tmp_path / "out"),
    )
    assert validate(spec) == [
        f"data_roots.uc_merced: {tmp_path / 'nope'} is not a folder",
        f"pretrained.mobilevit_s.cvnets_in1k: weights of 'mobilevit_s.cvnets_in1k' at {tmp_path / 'mobilevit.safetensors'} "
        "is a folder, not a file",
        f"weights_dir: weights of 'resnet50.a1_in1k' not found at {tmp_path / 'weights' / 'resnet50.a1_in1k.safetensors'}",
        f"store: {tmp_path / 'store.sqlite'} is a folder; give the SQLite file's path",
        f"out_dir: {tmp_path / 'out'} is a file, not a folder",
    ]
    missing = validate(
        dataclasses.replace(
            spec,
            weights_dir=str(tmp_path / "absent"),
            datasets=("digits",),
            data_roots={},
            store="s.sqlite",
            out_dir="o",
        )
    )
    assert missing[0] == (  # one line for the folder, not one per backbone
        f"weights_dir: {tmp_path / 'absent'} is not a folder (it should hold <backbone>.safetensors of 2 "
        "backbone(s): deit_tiny_patch16_224.fb_in1k, resnet50.a1_in1k)"
    )
    assert len(missing) == 2 and missing[1].startswith("pretrained.mobilevit_s.cvnets_in1k: ")


# ----------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "content, message",
    [
        (b"backbones: [a\n", "malformed YAML at line 2, column 1"),
        (b"a: b: c\n", "malformed YAML at line 1, column 5: mapping values are not allowed here"),
        (b"\xff\xfe\x00b\x00", "not UTF-8 text (byte 0 is 0xff)"),
        (b"", "empty; expected a mapping of grid keys"),
        (b"- a\n- b\n", "expected a mapping of grid keys at the top level, got list"),
        (b"hello\n", "expected a mapping of grid keys at the top level, got str"),
        (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper than 32 levels"),
        (b"a:\n" + b"".join(b"  " * i + b" k:\n" for i in range(1, 200)), "nested deeper than 32 levels"),
        (YAML.encode() + b"seed: 1\nseed: 2\n", "line 12, column 1: key 'seed' given twice in one mapping"),
        (YAML.encode() + b"1: x\n", "keys must be strings, got 1 (int)"),
        (YAML.encode() + b"budget_minutes2: 1\n", "unknown key(s) 'budget_minutes2' (did you mean 'budget_minutes'?)"),
        (
            YAML.replace("random_init: true", "random_init: yes").encode(),
            "random_init must be true or false, got 'yes'",
        ),
        (YAML.encode() + b"fixed: {cosine: off}\n", "fixed.cosine must be true or false, got 'off' (str)"),
        (
            YAML.encode() + b"num_samples: 1e15\n",
            "num_samples must be an int >= 1 and <= 100000 or null, got 1000000000000000.0",
        ),
    ],
)
def test_yaml_problems_are_value_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "g.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_files_that_are_not_specs(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=f"{tmp_path}: is a folder; give the grid spec's YAML file"):
        load_spec(tmp_path)
    with pytest.raises(ValueError, match="missing.yaml: no such file"):
        load_spec(tmp_path / "missing.yaml")
    path = tmp_path / "g.yaml"
    path.write_text(YAML)
    assert load_spec(path).name == "g"
    path.write_bytes(b"\xef\xbb\xbf" + YAML.encode())  # a UTF-8 byte-order mark is fine
    assert load_spec(path).name == "g"
    monkeypatch.setattr(spec_module, "MAX_SPEC_BYTES", 100)
    with pytest.raises(ValueError, match="bytes; a grid spec is at most 100"):
        load_spec(path)


def test_aliased_yaml_bombs_are_refused_quickly_with_a_short_message(tmp_path):
    """budget_minutes given nine levels of nine aliases (9**9 leaves if expanded): refused by its type at once,
    the value shown cut short."""
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        levels.append(f"&a{i} [{', '.join([levels[-1]] + [f'*a{i - 1}'] * 8)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text(YAML.replace("budget_minutes: 30", f"budget_minutes: {levels[-1]}"))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"budget_minutes must be a number in \(0, 525600\], got \[\[\[") as err:
        load_spec(path)
    assert time.perf_counter() - start < 2 and len(str(err.value)) < len(str(path)) + 200
