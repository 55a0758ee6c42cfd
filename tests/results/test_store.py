"""The results store: nothing lost, nothing duplicated, standard and fast AutoAttack never mixed.

Round trip of every field; re-putting a key replaces it (also for keys whose eps / corruption / severity are
None, the NULL-uniqueness trap); put_many is all or nothing; a writer SIGKILLed mid-grid and rerun leaves
exactly one row per key and an intact file; two processes write concurrently; the wide summary; the exports.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import ROOT

from rft_fast.results import THREATS, Measurement, Store, format_table, to_csv, to_json

MODEL = dict(
    run_id="r1",
    dataset="cifar10",
    backbone="vit_s",
    loss="trades",
    protocol="FFT-5",
    hparams={"lr": 1e-4, "beta": 6.0, "aug": ["crop", "flip"]},
)
NONE = dict(eps=None, corruption=None, severity=None, mode="-")
STAMP = {"timestamp": "2026-01-01T12:00:00+00:00"}  # fixed, so measurements made a second apart compare equal


def clean(accuracy: float = 0.9, **kw) -> Measurement:
    return Measurement(
        **{**MODEL, **NONE, "threat": "clean", "accuracy": accuracy, "n": 1000, "seconds": 3.5, **STAMP, **kw}
    )


def attack(
    threat: str = "Linf", eps: float = 8 / 255, mode: str = "standard", accuracy: float = 0.5, **kw
) -> Measurement:
    return Measurement(
        **{
            **MODEL,
            "threat": threat,
            "eps": eps,
            "corruption": None,
            "severity": None,
            "mode": mode,
            "accuracy": accuracy,
            "n": 1000,
            "seconds": 120.0,
            **STAMP,
            **kw,
        }
    )


def corruption(name: str = "study", severity: int = 3, accuracy: float = 0.7, **kw) -> Measurement:
    return Measurement(
        **{
            **MODEL,
            "threat": "corruption",
            "eps": None,
            "corruption": name,
            "severity": severity,
            "mode": "-",
            "accuracy": accuracy,
            "n": 1000,
            "seconds": 30.0,
            **STAMP,
            **kw,
        }
    )


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "sub" / "results.db") as s:
        yield s


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


# 1. round trip -------------------------------------------------------------------------------------------------


def test_roundtrip_every_field(store: Store) -> None:
    versions = {"torch": "2.11.0", "timm": "1.0.15", "pyautoattack": "0.2", "rft_fast": "0.1.0"}
    written = [clean(versions=versions), attack(versions=versions), corruption(versions=versions)]
    for m in written:
        store.put(m)
    back = store.query()
    assert back == written  # dataclass equality: every field, in key order (clean, Linf, corruption)
    c, a, k = back
    assert (c.eps, c.corruption, c.severity, c.mode) == (None, None, None, "-")
    assert (a.eps, a.corruption, a.severity, a.mode) == (8 / 255, None, None, "standard")
    assert (k.eps, k.corruption, k.severity) == (None, "study", 3)
    assert c.hparams == MODEL["hparams"] and c.versions == versions
    assert isinstance(c.n, int) and isinstance(a.eps, float)
    assert store.query(threat="Linf") == [a] and store.query(eps=None, threat="clean") == [c]
    assert store.query(hparams={"aug": ["crop", "flip"], "beta": 6.0, "lr": 1e-4}) == back
    assert store.query(dataset="cifar100") == []
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_timestamp_is_utc_now_in_seconds() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = datetime.fromisoformat(
        Measurement(**{**MODEL, **NONE, "threat": "clean", "accuracy": 1.0, "n": 1, "seconds": 0.0}).timestamp
    )
    assert stamp.utcoffset() == timedelta(0) and stamp.microsecond == 0
    assert before <= stamp <= datetime.now(timezone.utc)


def test_tuple_hparams_normalised_to_their_stored_form(store: Store) -> None:
    m = clean(hparams={"betas": (0.9, 0.999)})
    assert m.hparams == {"betas": [0.9, 0.999]}  # the JSON round trip, so `m` equals what comes back
    store.put(m)
    assert store.query() == [m]


# 2. idempotence and key distinctness --------------------------------------------------------------------------


def test_same_key_replaces(store: Store) -> None:
    for m, later in [
        (clean(0.8), clean(0.81)),
        (attack(accuracy=0.4), attack(accuracy=0.42)),
        (corruption(accuracy=0.6), corruption(accuracy=0.65)),
    ]:
        store.put(m)
        store.put(later)
        same_key = store.query(**m.key())
        assert same_key == [later]
    assert len(store.query()) == 3


def test_none_key_fields_really_dedupe(store: Store) -> None:
    """SQLite UNIQUE lets NULLs repeat: the sentinels must make a clean row (eps, corruption, severity all None)
    unique in the table itself, not only through put()'s upsert."""
    store.put(clean(0.8))
    store.put(clean(0.9))
    store.put_many([clean(0.91), clean(0.92)])
    assert [m.accuracy for m in store.query()] == [0.92]
    with sqlite3.connect(store.path) as db:
        row = db.execute("SELECT * FROM measurements").fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db.execute(f"INSERT INTO measurements VALUES ({', '.join('?' * len(row))})", row)


def test_keys_differing_in_one_field_are_distinct(store: Store) -> None:
    variants = [
        attack(),
        attack(eps=4 / 255),
        attack(mode="fast"),
        attack(threat="L2", eps=0.5),
        attack(hparams={"lr": 1e-3}),
        attack(run_id="r2"),
        clean(),
        corruption(),
        corruption(severity=5),
        corruption(name="fog"),
        corruption(hparams={"lr": 1e-3}),
    ]
    assert store.put_many(variants) == len(variants)
    assert store.put_many(variants) == len(variants)  # again: replaces, adds nothing
    assert len(store.query()) == len(variants)
    assert sorted(map(repr, store.query())) == sorted(map(repr, variants))


def test_hparams_key_ignores_dict_order(store: Store) -> None:
    store.put(clean(0.1, hparams={"a": 1, "b": 2}))
    store.put(clean(0.2, hparams={"b": 2, "a": 1}))
    assert [m.accuracy for m in store.query()] == [0.2]


def test_has(store: Store) -> None:
    m = attack(mode="fast")
    assert not store.has(**m.key())
    store.put(m)
    assert store.has(**m.key())
    assert not store.has(**{**m.key(), "mode": "standard"})  # a fast result never counts as the standard one
    store.put(clean())
    assert store.has(**MODEL, threat="clean")  # eps / corruption / severity default to None, mode to "-"
    with pytest.raises(ValueError, match="^mode:"):
        store.has(**MODEL, threat="Linf", eps=8 / 255)


def test_delete(store: Store) -> None:
    store.put_many([clean(), attack(), attack(mode="fast"), corruption()])
    assert store.delete(mode="fast") == 1
    assert store.delete(threat="Linf", mode="fast") == 0
    assert {m.threat for m in store.query()} == {"clean", "Linf", "corruption"}
    with pytest.raises(ValueError, match="at least one filter"):
        store.delete()
    with pytest.raises(ValueError, match="unknown filter"):
        store.delete(accuracy=0.5)


def test_query_rejects_unknown_filters(store: Store) -> None:
    with pytest.raises(ValueError, match=r"unknown filter.*'model'"):
        store.query(model="vit_s")
    with pytest.raises(ValueError, match="^threat:"):
        store.query(threat="linf")
    with pytest.raises(ValueError, match="^mode:"):
        store.query(mode="Standard")


# 3. atomic batches --------------------------------------------------------------------------------------------


def test_put_many_is_all_or_nothing(store: Store) -> None:
    store.put(clean(0.5))
    bad = attack(threat="L1", eps=12.0)
    object.__setattr__(bad, "accuracy", 1.5)  # slips past validation: the table's CHECK rejects it mid-batch
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        store.put_many([clean(0.99), attack(), bad, corruption()])
    assert store.query() == [clean(0.5)]  # the replacement of the clean row was rolled back too

    def batch():
        yield attack()
        yield corruption()
        raise RuntimeError("the evaluation died mid-batch")

    with pytest.raises(RuntimeError, match="mid-batch"):
        store.put_many(batch())
    assert store.query() == [clean(0.5)]
    assert store.put_many([attack(), corruption()]) == 2  # no transaction left open
    assert len(store.query()) == 3


# 4. crash safety and concurrent writers -----------------------------------------------------------------------

WRITER = """
import os, sys, time
from rft_fast.results import Measurement, Store
path, start, stop, pause, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if go:  # a start line, so that concurrent writers really overlap: say ready, wait for the go
    open(f"{go}.{start}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
with Store(path) as store:
    for i in range(start, stop):
        threat = ("clean", "Linf", "L2", "L1", "corruption")[i % 5]
        attack = threat in ("Linf", "L2", "L1")
        store.put(Measurement(
            run_id=f"run{i // 5}", dataset="cifar10", backbone="vit_s", loss="trades", protocol="FFT-5",
            hparams={"lr": 1e-4}, threat=threat, eps=0.5 if attack else None,
            corruption="study" if threat == "corruption" else None, severity=3 if threat == "corruption" else None,
            mode="standard" if attack else "-", accuracy=(i % 97) / 97, n=500, seconds=0.01))
        time.sleep(pause)
"""


def writer(path: Path, start: int, stop: int, pause: float, go: Path | str = "") -> subprocess.Popen:
    """A process putting measurements start..stop-1 one at a time (after `go` exists, when given)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-c", WRITER, str(path), str(start), str(stop), str(pause), str(go)]
    return subprocess.Popen(argv, env=env)


def keys(store: Store) -> set[tuple]:
    return {(m.run_id, m.threat) for m in store.query()}


def test_sigkill_mid_grid_then_rerun(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with Store(path) as store:
        proc = writer(path, 0, 200, pause=0.01)
        deadline = time.monotonic() + 60
        while len(store.query()) < 20:
            assert proc.poll() is None and time.monotonic() < deadline, "the writer stopped before 20 rows"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert 20 <= len(store.query()) < 200  # killed mid-way, its committed rows kept
    assert integrity(path) == "ok"

    rerun = writer(path, 0, 200, pause=0.0)
    assert rerun.wait(timeout=60) == 0
    with Store(path) as store:
        rows = store.query()
        assert len(rows) == 200 and len(keys(store)) == 200
        assert {m.threat for m in rows} == set(THREATS) - {"smoothing-L2"}  # the writer writes the other five
    assert integrity(path) == "ok"


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 10, "folder"])
def test_a_file_that_is_not_a_store_is_refused_and_kept(tmp_path: Path, content) -> None:
    """A store only ever appears complete on disk (it is built beside its path and linked into place), so a
    0-byte file is a lost store, never silently rewritten; garbage and folders are errors naming the path."""
    path = tmp_path / "results.db"
    if content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"results\.db"):
        Store(path)
    if content != "folder":
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.db"]


def test_a_fresh_store_leaves_no_building_files(tmp_path: Path) -> None:
    with Store(tmp_path / "results.db") as store:
        assert store.query() == []
    assert sqlite3.connect(tmp_path / "results.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path, go = tmp_path / "fresh" / "results.db", tmp_path / "go"
    procs = [writer(path, 0, 150, pause=0.002, go=go), writer(path, 150, 300, pause=0.002, go=go)]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{start}").exists() for start in (0, 150)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "writers did not start"
        time.sleep(0.01)
    go.touch()  # both create the file and schema at once, then contend for every put
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with Store(path) as store:
        assert len(store.query()) == 300
        assert keys(store) == {(f"run{i // 5}", THREATS[i % 5]) for i in range(300)}
    with sqlite3.connect(path) as db:  # commit order: the two writers' rows interleave, they did overlap
        first = [int(r[0][3:]) < 30 for r in db.execute("SELECT run_id FROM measurements ORDER BY rowid")]
    assert sum(a != b for a, b in zip(first, first[1:])) >= 2
    assert integrity(path) == "ok"


def test_writer_waits_for_the_lock_up_to_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process mid-transaction
    with Store(path, timeout=0.2) as impatient:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            impatient.put(clean())
    release = threading.Timer(0.3, holder.execute, ["COMMIT"])
    release.start()
    with Store(path, timeout=10) as patient:
        patient.put(clean())  # waits for the holder's commit instead of failing
        assert patient.query() == [clean()]
    release.join()
    holder.close()


# 5. summary ---------------------------------------------------------------------------------------------------


def test_summary_is_wide_and_never_mixes_modes(store: Store) -> None:
    other = dict(run_id="r2", dataset="cifar100")
    store.put_many(
        [
            clean(0.91),
            attack("Linf", accuracy=0.51),
            attack("Linf", mode="fast", accuracy=0.55),
            attack("L2", eps=0.5, accuracy=0.61),
            corruption(accuracy=0.71),
            corruption(severity=5, accuracy=0.31),
            corruption("fog", accuracy=0.11),
            clean(0.81, **other),
            attack("L1", eps=12.0, mode="fast", accuracy=0.44, **other),
        ]
    )
    model = {k: v for k, v in MODEL.items()}
    standard = store.summary()
    assert standard == [
        {
            **model,
            "n": 1000,
            "mode": "standard",
            "clean": 0.91,
            "Linf": 0.51,
            "Linf_eps": 8 / 255,
            "L2": 0.61,
            "L2_eps": 0.5,
            "L1": None,
            "L1_eps": None,
            "common": 0.71,
        },
        {
            **model,
            **other,
            "n": 1000,
            "mode": "standard",
            "clean": 0.81,
            "Linf": None,
            "Linf_eps": None,
            "L2": None,
            "L2_eps": None,
            "L1": None,
            "L1_eps": None,
            "common": None,
        },
    ]
    fast = store.summary("fast")
    assert [(r["clean"], r["Linf"], r["L2"], r["L1"], r["common"]) for r in fast] == [
        (0.91, 0.55, None, None, 0.71),
        (0.81, None, None, 0.44, None),
    ]
    assert store.summary(dataset="cifar100") == standard[1:]


def test_summary_never_puts_accuracies_of_different_n_on_one_row(store: Store) -> None:
    store.put_many([clean(0.91, n=359), attack("Linf", accuracy=0.51, n=16), clean(0.5, run_id="r2", n=16)])
    rows = [(r["run_id"], r["n"], r["clean"], r["Linf"]) for r in store.summary()]
    assert rows == [(MODEL["run_id"], 359, 0.91, None), (MODEL["run_id"], 16, None, 0.51), ("r2", 16, 0.5, None)]
    with pytest.raises(ValueError, match="^mode:"):
        store.summary("-")
    with pytest.raises(ValueError, match="unknown filter"):
        store.summary(threat="Linf")


def test_summary_refuses_ambiguous_eps(store: Store) -> None:
    store.put_many([clean(), attack(eps=8 / 255, accuracy=0.5), attack(eps=4 / 255, accuracy=0.7)])
    with pytest.raises(ValueError, match="several eps"):
        store.summary()
    assert [(r["Linf"], r["Linf_eps"]) for r in store.summary(eps={"Linf": 4 / 255})] == [(0.7, 4 / 255)]
    assert [r["clean"] for r in store.summary(eps={"Linf": 1 / 255})] == [0.9]


# 6. exports ---------------------------------------------------------------------------------------------------


def test_csv_roundtrip(store: Store, tmp_path: Path) -> None:
    rows = [clean(versions={"torch": "2.11"}), attack(), corruption()]
    store.put_many(rows)
    out = io.StringIO()
    to_csv(store.query(), out)
    header, *_ = out.getvalue().splitlines()
    assert header.split(",") == list(asdict(rows[0]))
    read = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(read) == 3
    for r, m in zip(read, rows):
        assert float(r["accuracy"]) == m.accuracy and int(r["n"]) == m.n
        assert json.loads(r["hparams"]) == m.hparams and json.loads(r["versions"]) == m.versions
        assert (float(r["eps"]) if r["eps"] else None) == m.eps  # full precision, None as empty
        assert (r["corruption"] or None, r["threat"], r["mode"]) == (m.corruption, m.threat, m.mode)

    path = tmp_path / "exports" / "wide.csv"
    to_csv(store.summary(), path)
    (wide,) = csv.DictReader(path.open(newline=""))
    assert float(wide["clean"]) == 0.9 and float(wide["Linf"]) == 0.5 and wide["L1"] == ""


def test_json_export(store: Store) -> None:
    store.put_many([clean(), attack()])
    out = io.StringIO()
    to_json(store.query(), out)
    assert json.loads(out.getvalue()) == [asdict(m) for m in store.query()]
    out = io.StringIO()
    to_json(store.summary(), out)
    assert json.loads(out.getvalue())[0]["L2"] is None


def test_format_table(store: Store) -> None:
    store.put_many([clean(0.9123), attack(accuracy=0.4567), corruption(accuracy=0.1234)])
    table = format_table(store.query())
    lines = table.splitlines()
    assert lines[0].split() == [
        "run_id",
        "dataset",
        "backbone",
        "loss",
        "protocol",
        "hparams",
        "threat",
        "eps",
        "corruption",
        "severity",
        "mode",
        "accuracy",
        "n",
        "seconds",
    ]
    assert len(lines) == 2 + 3 and len({len(line) for line in lines[:2]}) == 1
    for value in ("0.9123", "0.4567", "0.1234", "0.03137", "standard", "study", "cifar10"):
        assert value in table
    wide = format_table(store.summary())
    assert "common" in wide and "0.1234" in wide
    assert format_table([]) == "(no results)"


# 7. validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: clean(threat="linf"), "threat"),
        (lambda: attack(eps=0.0), "eps"),
        (lambda: attack(eps=-0.1), "eps"),
        (lambda: attack(eps=None), "eps"),
        (lambda: attack(eps=math.inf), "eps"),
        (lambda: clean(eps=0.1), "eps"),
        (lambda: clean(1.5), "accuracy"),
        (lambda: clean(-0.01), "accuracy"),
        (lambda: clean(math.nan), "accuracy"),
        (lambda: clean(n=0), "n"),
        (lambda: clean(n=10.0), "n"),
        (lambda: corruption(name=None), "corruption"),
        (lambda: corruption(name=""), "corruption"),
        (lambda: corruption(severity=None), "severity"),
        (lambda: corruption(severity=6), "severity"),
        (lambda: clean(corruption="fog"), "corruption"),
        (lambda: clean(severity=3), "severity"),
        (lambda: clean(mode="standard"), "mode"),
        (lambda: attack(mode="-"), "mode"),
        (lambda: attack(mode="Fast"), "mode"),
        (lambda: clean(run_id=""), "run_id"),
        (lambda: clean(dataset=None), "dataset"),
        (lambda: clean(hparams={"f": object()}), "hparams"),
        (lambda: clean(hparams={"lr": math.nan}), "hparams"),
        (lambda: clean(hparams="lr=1e-4"), "hparams"),
        (lambda: clean(versions=["torch"]), "versions"),
        (lambda: clean(seconds=-1.0), "seconds"),
        (lambda: clean(timestamp="yesterday"), "timestamp"),
    ],
)
def test_validation_names_the_field(make, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        make()


def test_replace_revalidates() -> None:
    with pytest.raises(ValueError, match="^accuracy:"):
        replace(clean(), accuracy=2.0)


# schema ---------------------------------------------------------------------------------------------------------


def test_refuses_newer_schema_and_foreign_databases(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ValueError, match="schema version 99.*newer rft_fast"):
        Store(path)

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ValueError, match="not an rft_fast results store"):
        Store(foreign)
    with sqlite3.connect(foreign) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["t"]  # left untouched


# randomized smoothing (smoothing-L2) and the version-1 -> 2 migration ----------------------------------------

CERTIFY = {"n0": 100, "n": 1000, "alpha": 0.001}


def smooth(radius: float | None = 0.5, sigma: float = 0.25, accuracy: float = 0.4, **kw) -> Measurement:
    """A smoothing-L2 row: certified accuracy at `radius` (None: the smoothed classifier's accuracy)."""
    versions = {"torch": "2.x", "smoothing": {"sigma": sigma, **CERTIFY}}
    return Measurement(
        **{
            **MODEL,
            "threat": "smoothing-L2",
            "eps": radius,
            "corruption": None,
            "severity": None,
            "mode": f"sigma={sigma}",
            "accuracy": accuracy,
            "n": 500,
            "seconds": 12.0,
            "versions": versions,
            **STAMP,
            **kw,
        }
    )


def test_smoothing_rows_roundtrip_keyed_by_sigma_and_radius(store: Store) -> None:
    rows = [smooth(r, s, acc) for s in (0.5, 0.25) for r, acc in ((None, 0.6), (0.0, 0.55), (0.25, 0.4), (1.0, 0.1))]
    assert store.put_many(rows) == 8  # 8 distinct keys: sigma and radius both in the key
    got = store.query(threat="smoothing-L2")
    assert len(got) == 8
    # ordered by sigma, then the smoothed row (eps None) before the radii ascending
    assert [(m.mode, m.eps) for m in got] == [(f"sigma={s}", r) for s in (0.25, 0.5) for r in (None, 0.0, 0.25, 1.0)]
    assert got[1] == smooth(0.0, 0.25, 0.55) and got[1].versions["smoothing"] == {"sigma": 0.25, **CERTIFY}
    assert store.query(threat="smoothing-L2", mode="sigma=0.5", eps=0.0) == [smooth(0.0, 0.5, 0.55)]
    assert store.query(mode="sigma=0.50") == store.query(mode="sigma=0.5")  # the filter is canonicalised too
    assert store.has(**smooth(0.25, 0.5).key()) and not store.has(**smooth(0.5, 0.5).key())
    assert not store.has(**smooth(0.25, 0.125).key())
    store.put(smooth(0.25, 0.5, 0.3, versions={"smoothing": {"sigma": 0.5, "n0": 10, "n": 99, "alpha": 0.01}}))
    assert len(store.query(threat="smoothing-L2")) == 8  # n0 / n / alpha are recorded, not keyed: replaced
    assert store.query(mode="sigma=0.5", eps=0.25)[0].versions["smoothing"]["n"] == 99
    assert store.delete(threat="smoothing-L2", mode="sigma=0.25") == 4


def test_smoothing_mode_is_canonical() -> None:
    from rft_fast.results import smoothing_mode, smoothing_sigma

    assert smooth(mode="sigma=0.250").mode == "sigma=0.25" == smoothing_mode(0.25)
    assert smoothing_mode(1) == "sigma=1.0" and smoothing_sigma("sigma=1.0") == 1.0
    assert smooth(0.0).eps == 0.0 and isinstance(smooth(1).eps, float)
    with pytest.raises(ValueError, match="^sigma:"):
        smoothing_mode(0.0)


def test_summary_ignores_smoothing_rows(store: Store) -> None:
    store.put_many([clean(), attack(), smooth(0.0), smooth(None)])
    (row,) = store.summary()
    assert row["clean"] == 0.9 and row["Linf"] == 0.5 and "smoothing-L2" not in row
    other = dict(MODEL, run_id="only-smoothing")
    store.put(smooth(0.5, **{k: other[k] for k in ("run_id",)}))
    assert [r["run_id"] for r in store.summary()] == ["r1"]  # a model with smoothing rows only has no wide row


@pytest.mark.parametrize(
    "make, field, message",
    [
        (lambda: smooth(-0.1), "eps", "radius >= 0"),
        (lambda: smooth(math.nan), "eps", "finite"),
        (lambda: smooth(mode="standard"), "mode", "sigma="),
        (lambda: smooth(mode="-"), "mode", "sigma="),
        (lambda: smooth(mode="sigma=0"), "mode", "sigma="),
        (lambda: smooth(mode="sigma=abc"), "mode", "sigma="),
        (lambda: smooth(corruption="fog"), "corruption", "None"),
        (lambda: smooth(severity=3), "severity", "None"),
        (lambda: smooth(versions={"torch": "2.x"}), "versions", "CERTIFY"),
        (lambda: smooth(versions={"smoothing": {"sigma": 0.25, "n0": 1, "n": 10}}), "versions", "alpha"),
        (lambda: smooth(versions={"smoothing": {"sigma": 0.25, "n0": 1, "n": 0, "alpha": 0.1}}), "versions", "'n'"),
        (lambda: smooth(versions={"smoothing": {"sigma": 0.25, "n0": 1, "n": 9, "alpha": 1.0}}), "versions", "alpha"),
        (lambda: smooth(versions={"smoothing": {"sigma": 0.5, "n0": 1, "n": 9, "alpha": 0.1}}), "versions", "sigma"),
        (lambda: attack(eps=0.0), "eps", "eps > 0"),
        (lambda: clean(eps=0.0), "eps", "None"),
    ],
)
def test_smoothing_validation_names_the_field(make, field: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:.*{message}"):
        make()


def test_query_rejects_a_bad_mode_filter(store: Store) -> None:
    with pytest.raises(ValueError, match="^mode:.*sigma="):
        store.query(mode="sigma=-1")


# The version-1 schema exactly as rft_fast wrote it (before smoothing-L2), by hand: the migration must not rely on
# the code that creates it.
V1_SCHEMA = """
CREATE TABLE measurements (
    run_id TEXT NOT NULL, dataset TEXT NOT NULL, backbone TEXT NOT NULL, loss TEXT NOT NULL, protocol TEXT NOT NULL,
    hparams TEXT NOT NULL,
    threat TEXT NOT NULL CHECK (threat IN ('clean', 'Linf', 'L2', 'L1', 'corruption')),
    eps REAL NOT NULL CHECK ((threat IN ('Linf', 'L2', 'L1')) = (eps > 0) AND (eps > 0 OR eps = -1.0)),
    corruption TEXT NOT NULL CHECK ((threat = 'corruption') = (corruption != '')),
    severity INTEGER NOT NULL CHECK (CASE threat WHEN 'corruption' THEN severity BETWEEN 1 AND 5 ELSE severity = 0 END),
    mode TEXT NOT NULL CHECK (CASE WHEN threat IN ('Linf', 'L2', 'L1') THEN mode IN ('standard', 'fast')
                                   ELSE mode = '-' END),
    accuracy REAL NOT NULL CHECK (accuracy BETWEEN 0 AND 1),
    n INTEGER NOT NULL CHECK (n >= 1),
    seconds REAL NOT NULL CHECK (seconds >= 0),
    versions TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (run_id, dataset, backbone, loss, protocol, hparams, threat, eps, corruption, severity, mode)
)
"""


def v1_store(path: Path) -> list[tuple]:
    """A version-1 store at `path` holding a clean, an attack and a corruption row; returns its raw rows."""
    rows = [
        (
            "r1",
            "cifar10",
            "vit_s",
            "trades",
            "FFT-5",
            '{"lr":0.0001}',
            "clean",
            -1.0,
            "",
            0,
            "-",
            0.9,
            1000,
            3.5,
            '{"torch":"2.x"}',
            "2026-01-01T12:00:00+00:00",
        ),
        (
            "r1",
            "cifar10",
            "vit_s",
            "trades",
            "FFT-5",
            '{"lr":0.0001}',
            "Linf",
            4 / 255,
            "",
            0,
            "standard",
            0.5,
            1000,
            120.0,
            '{"torch":"2.x"}',
            "2026-01-01T12:00:00+00:00",
        ),
        (
            "r1",
            "cifar10",
            "vit_s",
            "trades",
            "FFT-5",
            '{"lr":0.0001}',
            "corruption",
            -1.0,
            "study",
            3,
            "-",
            0.7,
            1000,
            30.0,
            '{"torch":"2.x"}',
            "2026-01-01T12:00:00+00:00",
        ),
    ]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute(V1_SCHEMA)
        db.executemany(f"INSERT INTO measurements VALUES ({', '.join('?' * 16)})", rows)
    return rows


def test_migrates_a_version_1_store_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    raw = v1_store(path)
    with sqlite3.connect(path) as db:
        with pytest.raises(sqlite3.IntegrityError):  # the v1 CHECKs refuse smoothing rows
            db.execute(
                f"INSERT INTO measurements VALUES ({', '.join('?' * 16)})",
                raw[0][:6] + ("smoothing-L2", 0.5, "", 0, "sigma=0.25") + raw[0][11:],
            )
    with Store(path) as store:
        before = store.query()
        assert [(m.threat, m.eps, m.mode, m.accuracy) for m in before] == [
            ("clean", None, "-", 0.9),
            ("Linf", 4 / 255, "standard", 0.5),
            ("corruption", None, "-", 0.7),
        ]
        store.put(smooth(0.5, hparams={"lr": 1e-4}))  # the new CHECKs allow smoothing rows
        assert len(store.query()) == 4
        (row,) = store.summary()
        assert (row["clean"], row["Linf"], row["common"]) == (0.9, 0.5, 0.7)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"schema_version", "measurements", "stages"}
        assert sorted(db.execute("SELECT * FROM measurements WHERE threat != 'smoothing-L2'")) == sorted(
            raw
        )  # v1 values unchanged
        with pytest.raises(sqlite3.IntegrityError):  # and the new CHECKs still hold attack eps > 0
            db.execute(f"INSERT INTO measurements VALUES ({', '.join('?' * 16)})", raw[1][:7] + (0.0,) + raw[1][8:])
    with Store(path) as store:  # a second open finds version 3: nothing to do
        assert len(store.query()) == 4


def test_failed_migration_leaves_the_version_1_store_untouched(tmp_path: Path, monkeypatch) -> None:
    from rft_fast.results import schema as store_module

    path = tmp_path / "v1.db"
    raw = v1_store(path)

    def broken(db: sqlite3.Connection) -> int:
        store_module.rebuild_measurements(db)
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(store_module.MIGRATIONS, 1, broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        Store(path)
    with sqlite3.connect(path) as db:  # rolled back: still version 1 with its rows and its table
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert sorted(db.execute("SELECT * FROM measurements")) == sorted(raw)
        assert "smoothing" not in db.execute("SELECT sql FROM sqlite_master WHERE name = 'measurements'").fetchone()[0]


# grid stages (schema 3) ---------------------------------------------------------------------------------------
def test_stages_record_replace_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        assert store.stages() == [] and store.stage("a|b|c|d", "tune") is None
        store.set_stage("a|b|c|d", "tune", "failed", "trial diverged")
        store.set_stage("a|b|c|d", "tune", "done", detail={"checkpoint": "/x/checkpoint.pt", "metric": 0.5})
        store.set_stage("a|b|c|d", "L1", "failed", "RuntimeError: boom")
    with Store(path) as store:
        tune = store.stage("a|b|c|d", "tune")
        assert (tune.status, tune.reason, tune.detail) == (
            "done",
            "",
            {"checkpoint": "/x/checkpoint.pt", "metric": 0.5},
        )
        assert [(s.stage, s.status) for s in store.stages(status="failed")] == [("L1", "failed")]
        assert len(store.stages("a|b|c|d")) == 2  # replaced, not duplicated


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(status="broken"), "status"),
        (dict(status="failed", reason=""), "reason"),
        (dict(status="done", reason="why"), "reason"),
        (dict(config=""), "config"),
        (dict(stage=""), "stage"),
        (dict(detail={"x": float("nan")}), "detail"),
    ],
)
def test_stage_errors_name_the_argument(tmp_path: Path, kw, match) -> None:
    args = dict(config="k", stage="tune", status="done", reason="", detail=None) | kw
    with Store(tmp_path / "s.sqlite") as store, pytest.raises(ValueError, match=match):
        store.set_stage(**args)
        assert store.stages() == []


def test_migrates_a_version_2_store_adding_stages(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    v1_store(path)
    with Store(path):
        pass
    with sqlite3.connect(path) as db:  # make it a version-2 store again: drop what version 3 added
        db.execute("DROP TABLE stages")
        db.execute("UPDATE schema_version SET version = 2")
    with Store(path) as store:
        assert len(store.query()) == 3
        store.set_stage("k", "tune", "done")
        assert store.stage("k", "tune").status == "done"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
