"""A fuzz of what users hand the CLI: spec files, CSV tables, results stores and checkpoints, generated
(derandomized: the same cases on every machine). Every run ends either in success with exactly what was given,
or in one `error:` line and a non-zero exit: never a traceback, a silent coercion, a stored non-finite or
foreign number, or a different model from a damaged checkpoint."""

from __future__ import annotations

import copy
import math
import string

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rft_fast import cli
from rft_fast.grid import expand, load_spec
from rft_fast.results import Store
from rft_fast.train import CheckpointError, checkpoint

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE = yaml.safe_load("""
name: fuzz
backbones: [deit_tiny_patch16_224.fb_in1k]
losses: [trades]
protocols: [FFT-5]
datasets: [digits]
random_init: true
search: {lr_head: {loguniform: [0.0001, 0.01]}}
fixed: {image_size: 32, epochs: 2, batch_size: 64, effective_batch: 64}
budget_minutes: 2
num_samples: 2
asha: {metric: val_loss, mode: min, grace_period: 1, reduction_factor: 2}
""")
FIELDS = (
    "cosine",
    "memory_saving",
    "channels_last",
    "epochs",
    "image_size",
    "batch_size",
    "lr_backbone",
    "attack_steps",
    "seed",
    "workers",
    "beta",
)
ODD = st.one_of(
    st.sampled_from(["false", "no", "off", "yes", "true", "0", "1", "", "1e15", "nan", "-inf", "abc"]),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.none(),
)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_info:  # argparse usage errors and the commands' own error exits
        code = exit_info.code if isinstance(exit_info.code, int) else (0 if exit_info.code is None else 1)
        if isinstance(exit_info.code, str):
            print(exit_info.code, file=__import__("sys").stderr)
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, err: str) -> bool:
    return code != 0 and "Traceback" not in err and "error:" in err


@FUZZ
@given(st.sampled_from(FIELDS), ODD, st.sampled_from(["fixed", "top"]))
def test_a_spec_is_taken_exactly_as_given_or_refused(tmp_path, capsys, field, value, where):
    raw = copy.deepcopy(BASE)
    raw.update(store=str(tmp_path / "r.sqlite"), out_dir=str(tmp_path))
    key = field if where == "fixed" else {"cosine": "num_samples", "seed": "seed"}.get(field, "budget_minutes")
    (raw["fixed"] if where == "fixed" else raw)[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    code, _, err = _cli(capsys, "grid", str(path), "--dry-run")
    if code == 0:  # accepted: exactly the value given, of its own type, never a coerced string
        spec = load_spec(path)
        got = expand(spec)[0].train_fields(spec)[key] if where == "fixed" else getattr(spec, key)
        assert got == value and type(got) is type(value) and not isinstance(value, (str, list, dict))
    else:
        assert _refused(code, err), err


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=20,
        ).map(lambda v: yaml.safe_dump(v).encode()),
    )
)
def test_any_spec_file_gives_a_plan_or_one_error_line(tmp_path, capsys, content):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    code, _, err = _cli(capsys, "grid", str(path), "--dry-run")
    assert code != 0 and _refused(code, err), err  # none of these is a whole spec


CELL = st.one_of(
    st.sampled_from(["0.5", "85", "1e400", "nan", "-", "", "-0.1", "101", "1/3", "TRADES", "x" * 70000]),
    st.text(string.printable, max_size=8),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["trades", "TRADES", "classic", "nonsense"]), st.lists(CELL, min_size=4, max_size=6)),
        min_size=1,
        max_size=4,
    )
)
def test_an_imported_table_stores_only_finite_fractions_or_nothing(tmp_path, capsys, rows):
    header = "backbone,dataset,loss,protocol,clean,Linf,L2,L1,common"
    body = "\n".join(
        ",".join(["resnet18", f"digits{i}", loss, "FFT-5", *cells]) for i, (loss, cells) in enumerate(rows)
    )
    path, store = tmp_path / "t.csv", tmp_path / "s.sqlite"
    path.write_text(header + "\n" + body + "\n")
    code, _, err = _cli(capsys, "results", "import", str(path), "--store", str(store))
    with Store(store) as s:
        stored = s.query()
    if code == 0:
        assert all(math.isfinite(m.accuracy) and 0 <= m.accuracy <= 1 for m in stored)
        assert {m.loss for m in stored} <= {"trades", "classic_at"}
        assert all(m.run_id.startswith("import:") for m in stored)
    else:
        assert _refused(code, err) and stored == [], err


@FUZZ
@given(st.binary(max_size=2000))
def test_a_store_that_is_not_one_is_refused_and_kept(tmp_path, capsys, content):
    path = tmp_path / "s.sqlite"
    path.write_bytes(content)
    code, _, err = _cli(capsys, "results", "--store", str(path))
    assert _refused(code, err) and path.read_bytes() == content, err


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "checkpoint.pt"
    state = {"model": {"w": torch.arange(300, dtype=torch.float32)}, "config": {"a": 1}, "rng": checkpoint.rng_state()}
    checkpoint.save(path, state)
    return path


@FUZZ
@given(
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=3),
    st.sampled_from(["flip", "truncate"]),
)
def test_a_damaged_checkpoint_is_refused_or_loads_the_same_model(saved, tmp_path, edits, how):
    data = bytearray(saved.read_bytes())
    if how == "truncate":
        data = data[: int(edits[0][0] * len(data))]
    else:
        for where, mask in edits:
            data[int(where * len(data))] ^= mask
    path = tmp_path / "c.pt"
    path.write_bytes(bytes(data))
    try:
        state = checkpoint.load(path)
    except CheckpointError as error:
        assert "c.pt" in str(error)
        return
    # only bytes outside every record changed (zip padding, comments): the same model
    assert torch.equal(state["model"]["w"], torch.arange(300, dtype=torch.float32)) and state["config"] == {"a": 1}


def test_debug_anywhere_shows_the_traceback_instead_of_the_error_line(tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"not a store")
    code, _, err = _cli(capsys, "results", "--store", str(path))
    assert _refused(code, err) and "--debug shows the traceback" in err
    for argv in (["--debug", "results", "--store", str(path)], ["results", "--store", str(path), "--debug"]):
        with pytest.raises(ValueError, match="not an SQLite database"):
            cli.main(argv)
