"""'Done' means exactly done: a configuration's threat counts as measured only for rows of its run id, measured
under the spec's eval settings (eps, mode, severity, requested n, subset seed, seed); imported rows never count;
a spec change is reported by the dry run as stale and then rerun, never skipped."""

from __future__ import annotations

import copy

import yaml

from rft_fast import cli
from rft_fast.eval import EvalSettings, RunInfo
from rft_fast.grid import expand, load_spec
from rft_fast.grid.loader import StrictLoader
from rft_fast.grid.status import TUNE_STAGE, config_status, eval_settings, missing_threats, run_info
from rft_fast.results import Measurement, Store, smoothing_mode
from rft_fast.results.importing import import_csv

SPEC = yaml.load(open("examples/quick.yaml"), Loader=StrictLoader)


def _spec(tmp_path, **changes):
    raw = copy.deepcopy(SPEC)
    raw.update(store=str(tmp_path / "r.sqlite"), out_dir=str(tmp_path))
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return load_spec(raw)


def _rows(run: RunInfo, settings: EvalSettings, accuracy: float = 0.5, **versions) -> list[Measurement]:
    """One row per threat of `settings` for `run`, as evaluate() stores them."""
    base = dict(
        run_id=run.run_id,
        dataset=run.dataset,
        backbone=run.backbone,
        loss=run.loss,
        protocol=run.protocol,
        hparams=run.hparams,
        accuracy=accuracy,
        n=16,
        seconds=1.0,
        versions={"eval": settings.identity(), **versions},
    )
    out = []
    for t in settings.threats:
        if t == "clean":
            out.append(Measurement(**base, threat="clean", eps=None, corruption=None, severity=None, mode="-"))
        elif t == "corruptions":
            out.append(
                Measurement(
                    **base, threat="corruption", eps=None, corruption="study", severity=settings.severity, mode="-"
                )
            )
        else:
            out.append(
                Measurement(
                    **base, threat=t, eps=float(settings.eps[t]), corruption=None, severity=None, mode=settings.mode
                )
            )
    return out


def _tuned(spec, store, config, tmp_path, hparams=None):
    """Records a done tuning of `config` (as the runner does) with a checkpoint file that exists."""
    hparams = hparams or {"lr_backbone": 1e-3, "lr_head": 1e-3, "cosine": True}
    checkpoint = tmp_path / f"{abs(hash(config.key))}.pt"
    checkpoint.write_bytes(b"x")
    detail = {"checkpoint": str(checkpoint), "hparams": hparams, "metric": 0.5, "trials": {}}
    train_config, run = run_info(spec, config, detail)
    store.set_stage(config.key, TUNE_STAGE, "done", detail={**detail, "run_id": run.run_id})
    return run


def test_missing_threats_knows_every_threat_the_spec_asks_for(tmp_path):
    config = expand(_spec(tmp_path))[0]
    run = RunInfo("r", "digits", config.backbone, config.loss, config.protocol_label, {})
    settings = EvalSettings(
        threats=("clean", "Linf", "corruptions", "smoothing-L2"), mode="fast", smoothing_radii=(0.5,)
    )
    ident = {"eval": settings.identity()}
    model = dict(
        run_id="r",
        dataset="digits",
        backbone=config.backbone,
        loss=config.loss,
        protocol=config.protocol_label,
        hparams={},
        accuracy=0.5,
        seconds=1.0,
    )
    smoothing = {"smoothing": {"sigma": 0.25, "n0": 10, "n": 100, "alpha": 0.001, "batch_size": 10, "seed": 0}, **ident}
    none = dict(corruption=None, severity=None)
    with Store(tmp_path / "r.sqlite") as store:
        assert missing_threats(store, run, settings, 10) == ["clean", "Linf", "corruptions", "smoothing-L2"]
        store.put(Measurement(**model, **none, n=10, threat="clean", eps=None, mode="-", versions=ident))
        store.put(Measurement(**model, **none, n=10, threat="Linf", eps=4 / 255, mode="standard", versions=ident))
        store.put(
            Measurement(
                **model, n=10, threat="corruption", eps=None, mode="-", corruption="fog", severity=3, versions=ident
            )
        )
        store.put(
            Measurement(
                **model, **none, n=10, threat="smoothing-L2", eps=0.5, mode=smoothing_mode(0.25), versions=smoothing
            )
        )
        # Linf only in standard mode (the settings want fast), one corruption type but not the aggregate, the
        # certified accuracy but not the smoothed one
        assert missing_threats(store, run, settings, 10) == ["Linf", "corruptions", "smoothing-L2"]
        assert missing_threats(store, run, settings, 20) == ["clean", "Linf", "corruptions", "smoothing-L2"]  # other n
        store.put(Measurement(**model, **none, n=10, threat="Linf", eps=4 / 255, mode="fast", versions=ident))
        store.put(
            Measurement(
                **model, n=10, threat="corruption", eps=None, mode="-", corruption="study", severity=3, versions=ident
            )
        )
        store.put(
            Measurement(
                **model, **none, n=10, threat="smoothing-L2", eps=None, mode=smoothing_mode(0.25), versions=smoothing
            )
        )
        assert missing_threats(store, run, settings, 10) == []
        assert missing_threats(store, run, settings) == []
        other = RunInfo("other-run", *list(run.__dict__.values())[1:])
        assert missing_threats(store, other, settings, 10) == ["clean", "Linf", "corruptions", "smoothing-L2"]
        for changed in (dict(n=32), dict(subset_seed=1), dict(seed=7)):  # measured under other eval settings
            again = EvalSettings(threats=settings.threats, mode="fast", smoothing_radii=(0.5,), **changed)
            assert missing_threats(store, run, again) == ["clean", "Linf", "corruptions", "smoothing-L2"]


def test_rows_without_the_eval_identity_do_not_count(tmp_path):
    """Rows of an earlier version (no versions['eval']) cannot prove under which settings they were measured."""
    config = expand(_spec(tmp_path))[0]
    run = RunInfo("r", "digits", config.backbone, config.loss, config.protocol_label, {})
    settings = EvalSettings(threats=("clean",))
    with Store(tmp_path / "r.sqlite") as store:
        store.put_many([Measurement(**{**m.__dict__, "versions": {}}) for m in _rows(run, settings)])
        assert missing_threats(store, run, settings) == ["clean"]


def test_status_done_partial_stale_failed_new(tmp_path):
    spec = _spec(tmp_path)
    done, partial, stale, failed, new = expand(spec)[:4] + [None]
    with Store(spec.store) as store:
        settings = eval_settings(spec, spec.eval.threats)
        store.put_many(_rows(_tuned(spec, store, done, tmp_path), settings))
        store.put_many(
            _rows(
                _tuned(spec, store, partial, tmp_path),
                EvalSettings(threats=("clean", "Linf"), n=spec.eval.n, mode=spec.eval.mode, seed=spec.seed),
            )
        )
        run = _tuned(spec, store, stale, tmp_path)
        store.put_many(_rows(run, EvalSettings(threats=spec.eval.threats, n=999, mode=spec.eval.mode)))
        store.set_stage(failed.key, TUNE_STAGE, "failed", "no trial reported a finite metric")
        states = {c.key: config_status(spec, store, c) for c in expand(spec)}
    assert states[done.key] == ("done", "")
    assert states[partial.key] == ("partial", "to evaluate: L2, L1, corruptions")
    assert states[stale.key][0] == "stale" and "other eval settings" in states[stale.key][1]
    assert states[failed.key] == ("failed", "tuning failed: no trial reported a finite metric (retried)")
    # a spec whose fixed fields change gives the tuned trial another run id: every tuned configuration is stale
    longer = _spec(tmp_path, fixed={"epochs": 3})
    with Store(spec.store) as store:
        assert config_status(longer, store, done) == (
            "stale",
            "the spec now trains another configuration (other run id): re-tuned",
        )
        eval_n = _spec(tmp_path, eval={"n": 32})
        assert config_status(eval_n, store, done)[0] == "stale"


def test_imported_rows_never_make_a_configuration_done(tmp_path):
    """A published table for the same backbone, loss, protocol and dataset is not our measurement."""
    spec = _spec(tmp_path)
    config = expand(spec)[0]
    csv_path = tmp_path / "published.csv"
    csv_path.write_text(
        "backbone,dataset,loss,protocol,clean,Linf,L2,L1,common\n"
        f"{config.backbone},{config.dataset},{config.loss},{config.protocol_label},"
        "0.9,0.5,0.6,0.4,0.7\n"
    )
    with Store(spec.store) as store:
        import_csv(csv_path, store)
        assert config_status(spec, store, config)[0] == "new"
        run = _tuned(spec, store, config, tmp_path)
        assert config_status(spec, store, config) == ("partial", "to evaluate: clean, Linf, L2, L1, corruptions")
        assert all(m.run_id.startswith("import:") and m.run_id != run.run_id for m in store.query())


def test_dry_run_reports_stale_configurations(tmp_path, capsys):
    spec = _spec(tmp_path)
    raw = copy.deepcopy(SPEC)
    raw.update(store=spec.store, out_dir=str(tmp_path))
    with Store(spec.store) as store:
        for config in expand(spec):
            store.put_many(_rows(_tuned(spec, store, config, tmp_path), eval_settings(spec, spec.eval.threats)))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["grid", str(path), "--dry-run"]) == 0
    assert f"status against {spec.store}: 4 done\n" in capsys.readouterr().out
    raw["eval"]["n"] = 32
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["grid", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 stale" in out and out.count(": stale: ") == 4
