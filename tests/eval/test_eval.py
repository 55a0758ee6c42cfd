"""Evaluation on a small model trained here on the built-in digits: AutoAttack through pyautoattack, the
corruption accuracy, the store rows, crash-and-rerun, and the errors of `rft-fast eval`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import digits
import pytest
import tiny
import torch
from helpers import ROOT

from rft_fast import cli, data
from rft_fast.eval import EvalSettings, RunInfo, autoattack, evaluate
from rft_fast.results import Store
from rft_fast.train import TrainConfig, fit, load_trained


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones():
    with tiny.registered():
        yield


FAST = dict(mode="fast", n=12)


@pytest.fixture(scope="module")
def cnn():
    """(model, x, y): the small digits CNN (fast enough for full AutoAttack runs on CPU) and 12 held-out points."""
    model, x, y, _ = digits.train(epochs=4)
    idx = torch.cat([torch.nonzero(y == c)[:2, 0] for c in range(6)])
    return model, x[idx], y[idx]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, model, test split): tiny_resnet trained (standard CE, 3 epochs, 32 px) by `fit`."""
    out = tmp_path_factory.mktemp("run")
    fit(
        TrainConfig(
            backbone="tiny_resnet",
            dataset="digits",
            random_init=True,
            protocol="FFT-5",
            loss="ce",
            epochs=3,
            image_size=32,
            batch_size=64,
            effective_batch=64,
            lr_backbone=3e-3,
            lr_head=3e-3,
            attack_eps=8 / 255,
            attack_steps=5,
            val_samples=32,
            val_steps=2,
            device="cpu",
            workers=0,
            out_dir=str(out),
        )
    )
    model, config = load_trained(out)
    return out, model, data.build("digits", image_size=config.image_size).test


def _points(test_set, n=12):
    subset = data.stratified_subset(test_set, n, seed=0)
    images, labels = zip(*(subset[i] for i in range(len(subset))))
    return data.to_device(torch.stack(images), torch.tensor(labels), "cpu")


@pytest.mark.parametrize("norm, small, large", [("Linf", 2 / 255, 24 / 255), ("L2", 0.1, 2.0), ("L1", 1.0, 20.0)])
def test_robust_accuracy_falls_with_eps_and_never_exceeds_clean(cnn, norm, small, large):
    model, x, y = cnn
    weak, strong = (autoattack(model, x, y, norm=norm, eps=eps, mode="fast") for eps in (small, large))
    assert weak.clean == strong.clean > 0.6
    assert strong.robust < weak.robust <= weak.clean
    assert weak.mode == "fast" and weak.n == len(y) and weak.eps == small


def test_standard_and_fast_modes_configure_autoattack(trained, monkeypatch):
    import pyautoattack

    _, model, test_set = trained
    x, y = _points(test_set, 4)
    seen = []

    def spy(self, x_orig, y_orig, **kw):
        seen.append((list(self.attacks_to_run), self.norm, self.epsilon, self.apgd.n_restarts, self.apgd.use_largereps))
        return x_orig.clone(), y_orig.clone()

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    autoattack(model, x, y, norm="Linf", mode="standard")
    autoattack(model, x, y, norm="L1", mode="standard")
    autoattack(model, x, y, norm="L2", mode="fast")
    assert seen == [
        (["apgd-ce", "apgd-t", "fab-t", "square"], "Linf", 4 / 255, 1, False),
        (
            ["apgd-ce", "apgd-t", "fab-t", "square"],
            "L1",
            75.0,
            5,
            True,
        ),  # the study's L1: large-eps schedule, 5 restarts
        (["apgd-ce", "apgd-t"], "L2", 2.0, 1, False),
    ]


def test_standard_autoattack_end_to_end(cnn):
    model, x, y = cnn
    r = autoattack(model, x[:6], y[:6], norm="L2", eps=1.0, mode="standard")
    fast = autoattack(model, x[:6], y[:6], norm="L2", eps=1.0, mode="fast")
    assert r.mode == "standard" and r.robust <= fast.robust <= r.clean


def test_autoattack_rejects_bad_inputs(trained):
    _, model, test_set = trained
    x, y = _points(test_set, 4)
    with pytest.raises(ValueError, match="norm"):
        autoattack(model, x, y, norm="L3")
    with pytest.raises(ValueError, match="eps"):
        autoattack(model, x, y, norm="Linf", eps=-1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        autoattack(model, x * 2, y, norm="Linf")
    with pytest.raises(ValueError, match="NaN"):
        autoattack(model, x.clone().fill_(float("nan")), y, norm="Linf")
    with pytest.raises(ValueError, match="y must"):
        autoattack(model, x, y.int(), norm="Linf")


def test_evaluate_stores_one_row_per_measurement_and_reruns_replace(trained, tmp_path):
    out, model, test_set = trained
    config = TrainConfig.from_dict(__import__("json").loads((out / "config.json").read_text()))
    run = RunInfo(config.run_id(), "digits", "tiny_resnet", "classic_at", "FFT-5", config.hparams())
    settings = EvalSettings(
        threats=("clean", "Linf", "corruptions"),
        cache_dir=str(tmp_path / "cache"),
        workers=0,
        eps={"Linf": 32 / 255},
        **FAST,
    )
    with Store(tmp_path / "r.sqlite") as store:
        first = evaluate(model, test_set, run, settings, store=store)
        evaluate(model, test_set, run, settings, store=store)
        rows = store.query(run_id=run.run_id)
    assert len(rows) == len(first) == 1 + 1 + 1 + 11  # clean, Linf, study aggregate, 11 types (n=12: 1 or 2 each)
    by = {(m.threat, m.corruption): m for m in rows}
    clean = by[("clean", None)].accuracy
    assert by[("Linf", None)].accuracy <= clean and by[("Linf", None)].mode == "fast"
    study = by[("corruption", "study")]
    assert study.severity == 3 and study.n == 12
    per_type = [m for m in rows if m.threat == "corruption" and m.corruption != "study"]
    assert len(per_type) == 11 and sum(m.n for m in per_type) == 12
    assert study.accuracy == pytest.approx(sum(m.accuracy * m.n for m in per_type) / 12)
    assert all(m.versions["torch"] == torch.__version__ for m in rows)


def _eval_cmd(run_dir: Path, store: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rft_fast.cli",
        "eval",
        str(run_dir),
        "--threats",
        "clean,Linf,L2,corruptions",
        "--mode",
        "fast",
        "--n",
        "12",
        "--eps-linf",
        "32/255",
        "--eps-l2",
        "3",
        "--store",
        str(store),
        "--cache-dir",
        str(cache),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]


def _rows(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_kill_and_rerun_leaves_exactly_one_row_per_measurement(trained, tmp_path):
    out, _, _ = trained
    store, cache = tmp_path / "r.sqlite", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    # Each stored measurement is followed by a pause, so that the kill lands between measurements or in one.
    code = (
        "import sys, time, tiny; tiny.register(); from rft_fast import cli; from rft_fast.results import Store; "
        "put = Store.put; Store.put = lambda self, m: (put(self, m), time.sleep(0.5))[0]; sys.exit(cli.main(sys.argv[1:]))"
    )
    cmd = [sys.executable, "-c", code] + _eval_cmd(out, store, cache)[3:]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _rows(store) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the evaluation finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _rows(store)
    assert 3 <= killed_at < 15
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store(store) as s:
        rows = s.query()
    keys = [(m.threat, m.eps, m.corruption, m.severity, m.mode) for m in rows]
    assert len(keys) == len(set(keys)) == 1 + 2 + 1 + 11


def test_eval_command_from_weights_matches_checkpoint(trained, tmp_path, capsys):
    from safetensors.torch import save_file

    out, model, _ = trained
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, weights)
    store = tmp_path / "r.sqlite"
    common = ["--threats", "clean", "--n", "12", "--store", str(store), "--device", "cpu", "--no-progress"]
    assert cli.main(["eval", str(out)] + common) == 0
    assert (
        cli.main(
            [
                "eval",
                "--backbone",
                "tiny_resnet",
                "--weights",
                str(weights),
                "--dataset",
                "digits",
                "--image-size",
                "32",
                "--run-id",
                "from-weights",
            ]
            + common
        )
        == 0
    )
    with Store(store) as s:
        accs = {m.run_id: m.accuracy for m in s.query(threat="clean")}
    assert len(accs) == 2 and len(set(accs.values())) == 1
    assert cli.main(["results", "--store", str(store), "--format", "csv"]) == 0
    assert "from-weights" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/run"], "no checkpoint"),
        (["--threats", "clean,Linf,L5"], "threats must be"),
        (
            [
                "--backbone",
                "tiny_resnet",
                "--weights",
                "/nonexistent/w.safetensors",
                "--dataset",
                "caltech101",
                "--data-root",
                "/nonexistent/data",
            ],
            "101_ObjectCategories",
        ),
        (["--backbone", "tiny_resnet", "--dataset", "digits"], "--weights"),
    ],
)
def test_eval_command_errors_are_clear(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval"] + args + ["--store", str(tmp_path / "r.sqlite")])
    assert message in str(exc.value) + capsys.readouterr().err


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="threats"):
        EvalSettings(threats=("clean", "Linf3"))
    with pytest.raises(ValueError, match="eps"):
        EvalSettings(eps={"Linf": 0.0})
    with pytest.raises(ValueError, match="n must"):
        EvalSettings(n=0)
    with pytest.raises(ValueError, match="corruption_setting"):
        EvalSettings(corruption_setting="mild")


# randomized smoothing (smoothing-L2; settings and CLI errors in test_eval_smoothing.py) ----------------------------


def test_evaluate_stores_smoothed_and_certified_accuracy_per_sigma(trained, tmp_path):
    _, model, test_set = trained
    from rft_fast.eval.smoothing import certified_accuracy, certify, smoothed_accuracy

    sigmas, radii = (0.12, 0.5), (0.0, 0.1, 0.25, 0.5)
    settings = EvalSettings(
        threats=("clean", "smoothing-L2"),
        n=24,
        seed=3,
        smoothing_sigmas=sigmas,
        smoothing_radii=radii,
        smoothing_n0=20,
        smoothing_n=200,
        smoothing_alpha=0.01,
        smoothing_batch_size=500,
    )
    run = RunInfo("smooth-run", "digits", "tiny_resnet", "ce", "FFT-5", {"lr": 3e-3})
    with Store(tmp_path / "r.sqlite") as store:
        returned = evaluate(model, test_set, run, settings, store=store)
        evaluate(model, test_set, run, settings, store=store)  # a rerun replaces, never duplicates
        rows = store.query(run_id="smooth-run")
        summary = store.summary()
    assert len(rows) == len(returned) == 1 + len(sigmas) * (1 + len(radii))
    assert sorted((m.threat, m.mode, m.eps or 0.0, m.eps is None) for m in returned) == sorted(
        (m.threat, m.mode, m.eps or 0.0, m.eps is None) for m in rows
    )
    clean = rows[0]
    assert clean.threat == "clean" and clean.accuracy > 0.5
    assert [r["clean"] for r in summary] == [clean.accuracy]  # the wide summary is unaffected by smoothing rows

    x, y = _points(test_set, 24)  # the subset evaluate() draws (seed 0), as it converts it
    for sigma in sigmas:
        mine = [m for m in rows if m.mode == f"sigma={sigma}"]
        assert all(m.threat == "smoothing-L2" and m.n == 24 for m in mine)
        assert [m.eps for m in mine] == [None, *radii]
        smoothed, certified = mine[0].accuracy, [m.accuracy for m in mine[1:]]
        assert all(a >= b for a, b in zip(certified, certified[1:]))  # non-increasing in the radius
        assert certified[0] <= smoothed
        assert mine[0].seconds > 0 and all(m.seconds == 0 for m in mine[1:])  # the certification's time, once
        assert all(
            m.versions["smoothing"] == {"sigma": sigma, "n0": 20, "n": 200, "alpha": 0.01, "batch_size": 500, "seed": 3}
            for m in mine
        )
        assert all(m.versions["torch"] == torch.__version__ for m in mine)
        # the same numbers as certify() itself on the same subset and seed
        cert = certify(model, x, sigma, n0=20, n=200, alpha=0.01, batch_size=500, seed=3)
        assert smoothed == pytest.approx(smoothed_accuracy(cert, y))
        assert certified == pytest.approx(certified_accuracy(cert, y, radii))
    small, large = ([m.accuracy for m in rows if m.mode == f"sigma={s}" and m.eps == 0.0][0] for s in sigmas)
    assert small > 0.3 and small >= large  # little noise: much of the clean accuracy is certified at radius 0


def test_eval_command_with_smoothing(trained, tmp_path, capsys):
    out, _, _ = trained
    store = tmp_path / "r.sqlite"
    assert (
        cli.main(
            [
                "eval",
                str(out),
                "--threats",
                "clean,smoothing-L2",
                "--n",
                "12",
                "--sigma",
                "1/4,0.5",
                "--radii",
                "0,0.25",
                "--smoothing-n0",
                "10",
                "--smoothing-n",
                "100",
                "--smoothing-alpha",
                "0.05",
                "--store",
                str(store),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "sigma=0.25 smoothed" in text and "sigma=0.5 r=0.25" in text and "stored 7 measurements" in text
    with Store(store) as s:
        rows = s.query(threat="smoothing-L2")
        assert len(s.query(threat="clean")) == 1
    assert [(m.mode, m.eps) for m in rows] == [(f"sigma={s}", r) for s in (0.25, 0.5) for r in (None, 0.0, 0.25)]
    assert {json.dumps(m.versions["smoothing"], sort_keys=True) for m in rows} == {
        json.dumps({"sigma": s, "n0": 10, "n": 100, "alpha": 0.05, "batch_size": 1000, "seed": 0}, sort_keys=True)
        for s in (0.25, 0.5)
    }
    assert cli.main(["results", "--store", str(store), "--threat", "smoothing-L2", "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("smoothing-L2") == 6
