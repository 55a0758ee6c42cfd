"""Reading a checkpoint never runs code and never trusts damaged bytes: a pickle with a __reduce__ payload, a
flipped byte, a truncated or foreign file each give a CheckpointError naming the file (and the CLI one error:
line); what `fit` writes is plain data that torch.load(weights_only=True) opens; a killed write's temporary
files are removed on the next start."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import tiny
import torch

from rft_fast import cli
from rft_fast.train import CheckpointError, TrainConfig, checkpoint, fit, load_trained


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones():
    with tiny.registered():
        yield


def _config(out_dir, **kw) -> TrainConfig:
    base = dict(
        backbone="tiny_resnet",
        dataset="digits",
        random_init=True,
        protocol="FFT-5",
        loss="ce",
        batch_size=32,
        effective_batch=32,
        epochs=1,
        max_batches=1,
        image_size=32,
        device="cpu",
        workers=0,
        val_samples=16,
        val_steps=2,
        attack_steps=2,
        out_dir=str(out_dir),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fit(_config(out))
    return out / "checkpoint.pt"


class _Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(path, marker):
    torch.save({"config": {}, "model": {}, "num_classes": 2, "x": _Payload(marker)}, path)


def test_what_fit_writes_is_plain_data_and_verifies(trained):
    checkpoint.verify(trained)
    state = torch.load(trained, map_location="cpu", weights_only=True)  # no safe globals needed
    assert {"config", "model", "optimizer", "rng", "metrics"} <= set(state)
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    checkpoint.save(tmp_path / "c.pt", {"rng": checkpoint.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_checkpoint_of_the_earlier_format_still_loads(tmp_path):
    """Earlier versions stored NumPy's state as an ndarray tuple: allowed explicitly, and nothing else."""
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": None}
    torch.save({"rng": old}, tmp_path / "old.pt")
    expected = np.random.rand()
    np.random.seed(9)
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "old.pt")["rng"])
    assert np.random.rand() == expected


@pytest.mark.parametrize("reader", ["load_trained", "resume"])
def test_a_malicious_pickle_is_refused_and_never_executed(tmp_path, reader):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    _malicious(run / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt holds Python objects"):
        if reader == "load_trained":
            load_trained(run)
        else:
            fit(_config(run))
    assert not marker.exists()


def test_cli_eval_of_a_malicious_checkpoint_is_one_error_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _malicious(tmp_path / "x.pt", marker)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", str(tmp_path / "x.pt"), "--store", str(tmp_path / "r.sqlite")])
    assert exit_info.value.code not in (0, None)
    assert "x.pt holds Python objects" in str(exit_info.value) or "x.pt holds Python objects" in capsys.readouterr().err
    assert not marker.exists()


def test_a_flipped_byte_anywhere_in_the_payload_is_detected(trained, tmp_path):
    data = bytearray(trained.read_bytes())
    rng = np.random.default_rng(0)
    start = data.find(b"/data/0")  # the first tensor record's header: its bytes follow
    for offset in rng.integers(start + 200, len(data) // 2, size=3):
        bad = bytearray(data)
        bad[int(offset)] ^= 0x10
        (tmp_path / "bad.pt").write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match=r"bad\.pt"):
            load_trained(tmp_path / "bad.pt")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04" + bytes(64), "truncated", "list"])
def test_foreign_or_truncated_files_are_errors(trained, tmp_path, content):
    path = tmp_path / "c.pt"
    if content == "truncated":
        path.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"c\.pt"):
        load_trained(path)


def test_a_foreign_state_dict_is_an_error_not_a_traceback(tmp_path):
    torch.save(
        {"config": {"backbone": "tiny_resnet", "dataset": "digits"}, "model": {"w": torch.zeros(1)}, "num_classes": 10},
        tmp_path / "c.pt",
    )
    with pytest.raises(CheckpointError, match=r"does not hold a model"):
        load_trained(tmp_path / "c.pt")


def test_orphaned_temporary_files_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for i in range(3):
        (run / f"checkpoint.pt.abc{i}.tmp").write_bytes(b"x" * 100)
    (run / "keep.tmp").write_bytes(b"mine")
    fit(_config(run))
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".tmp") == ["keep.tmp"]
    assert (run / "checkpoint.pt").is_file()
