"""Common corruptions: the study's assignment, the library's outputs reproduced exactly, determinism across
worker counts, the cache (hits skip all corruption work, bad files are rebuilt) and argument errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from rft_fast import data
from rft_fast.eval import corruptions as C

imagecorruptions = pytest.importorskip("imagecorruptions")

KEY = {"dataset": "digits", "split": "test", "image_size": 32, "n": 24, "subset_seed": 0}


class Items(TensorDataset):
    """(image, int label) items from tensors, like rft_fast.data's datasets."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = super().__getitem__(index)
        return image, int(label)


@pytest.fixture(scope="module")
def digits() -> data.splits.LabeledSubset:
    return data.stratified_subset(data.build("digits", image_size=32).test, 24, 0)


@pytest.fixture(scope="module")
def study(digits) -> C.CorruptedSet:
    (result,) = C.build(digits, key=KEY, workers=0)
    return result


def synthetic(n: int, size: int = 32, seed: int = 0) -> Items:
    """Tensor items (no native images: corrupted with resolution "evaluation")."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(30, 226, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    return Items(images, torch.arange(n) % 3)


EVAL = {"resolution": "evaluation"}


def test_names_match_the_library():
    assert C.ALL == tuple(imagecorruptions.get_corruption_names("common"))
    assert set(C.STUDY) == set(C.ALL) - {"gaussian_noise", "glass_blur", "frost", "fog"}
    assert [C.ALL.index(n) for n in C.STUDY] == sorted(C.ALL.index(n) for n in C.STUDY)  # library order


@pytest.mark.parametrize("n", [11, 12, 24, 100, 359, 1000])
def test_assign_even_blocks(n):
    names = C.assign(n, blocks="even")
    assert len(names) == n
    blocks = [names.count(t) for t in C.STUDY]
    assert max(blocks) - min(blocks) <= 1 and min(blocks) >= 1
    assert names == sorted(names, key=C.STUDY.index)  # contiguous blocks, in the study's order
    if n == 1000:
        assert blocks == [91] * 10 + [90]


def test_assign_small_and_custom():
    assert C.assign(3) == list(C.STUDY[:3]) == C.assign(3, blocks="even")
    assert C.assign(0) == []
    assert C.assign(5, ("snow", "fog"), blocks="even") == ["snow"] * 3 + ["fog"] * 2
    assert C.assign(5, ("snow", "fog")) == ["snow"] * 2 + ["fog"] * 2 + ["snow"]  # the paper's wrap
    with pytest.raises(ValueError, match="n must"):
        C.assign(-1)


def test_study_set(digits, study):
    clean = torch.stack([digits[i][0] for i in range(len(digits))])
    assert study.setting == "study" and study.severity == 3 and not study.from_cache
    assert study.images.dtype == torch.uint8 and study.images.shape == clean.shape
    assert torch.equal(study.labels, torch.tensor([digits[i][1] for i in range(len(digits))]))
    assert study.labels.dtype == torch.int64
    assert study.corruptions == C.assign(len(digits))
    changed = (study.images != clean).flatten(1).any(1)
    names = np.array(study.corruptions)
    for name in ("shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "brightness", "contrast"):
        assert changed[torch.from_numpy(names == name)].all(), name
    assert changed.float().mean() >= 0.8


def test_deterministic_across_workers_and_seeds(digits, study):
    (pooled,) = C.build(digits, key=KEY, workers=2)
    assert torch.equal(pooled.images, study.images)
    (again,) = C.build(digits, key=KEY, workers=0)
    assert torch.equal(again.images, study.images)
    (other,) = C.build(digits, key=KEY, workers=0, seed=1)
    noisy = torch.from_numpy(np.isin(study.corruptions, ["shot_noise", "impulse_noise", "snow"]))
    assert not torch.equal(other.images[noisy], study.images[noisy])
    stable = torch.from_numpy(np.isin(study.corruptions, ["brightness", "contrast", "pixelate", "jpeg_compression"]))
    assert torch.equal(other.images[stable], study.images[stable])  # deterministic types ignore the seed


def test_build_leaves_global_numpy_rng_alone(digits):
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    C.build(digits, key=KEY, workers=0, names=("shot_noise",))
    assert np.array_equal(np.random.rand(3), expected)


@pytest.mark.parametrize("name", ["shot_noise", "impulse_noise", "motion_blur", "snow", "elastic_transform"])
def test_equals_imagecorruptions_with_documented_seed(name):
    dataset = synthetic(4)
    (result,) = C.build(dataset, key={}, workers=0, severity=2, seed=7, names=(name,), **EVAL)
    for i in range(len(dataset)):
        image = dataset[i][0].permute(1, 2, 0).numpy().copy()
        seed = C.image_seed(7, name, 2, i)
        np.random.seed(seed)
        kwargs = {"seed": seed} if name == "impulse_noise" else {}  # skimage draws from its own generator
        expected = imagecorruptions.corrupt(image, severity=2, corruption_name=name, **kwargs)
        assert torch.equal(result.images[i], torch.from_numpy(expected).permute(2, 0, 1)), (name, i)


def test_image_seed_distinct():
    seeds = {C.image_seed(s, n, v, i) for s in (0, 1) for n in ("snow", "fog") for v in (1, 2) for i in range(50)}
    assert len(seeds) == 400 and all(0 <= s < 2**32 for s in seeds)


def test_cache_roundtrip(tmp_path, digits, study, monkeypatch):
    (first,) = C.build(digits, key=KEY, workers=0, cache_dir=tmp_path)
    path = C.cache_path(KEY, "study", 3, 0, tmp_path, C.STUDY)
    assert path.exists() and not first.from_cache and torch.equal(first.images, study.images)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"] == KEY and meta["setting"] == "study" and meta["corruptions"] == list(C.STUDY)
    assert meta["resolution"] == "native" and meta["blocks"] == "study" and meta["format"] == C.CACHE_FORMAT
    assert meta["imagecorruptions"] == C.library_version() and meta["n_images"] == len(digits)
    assert {p.name for p in tmp_path.iterdir()} == {path.name, path.with_suffix(".json").name}  # no *.tmp left

    def forbidden(*args):
        raise AssertionError("a cache hit must not corrupt anything")

    monkeypatch.setattr(C, "corrupt_one", forbidden)
    (second,) = C.build(digits, key=KEY, workers=0, cache_dir=tmp_path)
    assert second.from_cache and torch.equal(second.images, study.images)
    assert torch.equal(second.labels, study.labels) and second.corruptions == study.corruptions


def test_cache_paths_differ():
    base = C.cache_path(KEY, "study", 3, 0, "/c", C.STUDY)
    others = [
        C.cache_path({**KEY, "n": 25}, "study", 3, 0, "/c", C.STUDY),
        C.cache_path(KEY, "study", 4, 0, "/c", C.STUDY),
        C.cache_path(KEY, "study", 3, 1, "/c", C.STUDY),
        C.cache_path(KEY, "study", 3, 0, "/c", C.STUDY[:-1]),
        C.cache_path(KEY, "snow", 3, 0, "/c", ("snow",)),
        C.cache_path(KEY, "study", 3, 0, "/c", C.STUDY, resolution="evaluation"),
        C.cache_path(KEY, "study", 3, 0, "/c", C.STUDY, blocks="even"),
    ]
    assert len({base, *others}) == 8 and base == C.cache_path(dict(reversed(KEY.items())), "study", 3, 0, "/c", C.STUDY)
    with pytest.raises(ValueError, match="key"):
        C.cache_path({"x": object()}, "study", 3, 0, "/c", C.STUDY)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "stale"])
def test_bad_cache_file_is_rebuilt(tmp_path, damage, monkeypatch):
    dataset = synthetic(6)
    (first,) = C.build(dataset, key={"d": 1}, workers=0, cache_dir=tmp_path, **EVAL)
    path = C.cache_path({"d": 1}, "study", 3, 0, tmp_path, C.STUDY, **EVAL)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file")
    else:  # a valid file for different images under the same key (e.g. a changed subset)
        C.build(synthetic(5, seed=1), key={"x": 2}, workers=0, cache_dir=tmp_path, **EVAL)
        path.write_bytes(C.cache_path({"x": 2}, "study", 3, 0, tmp_path, C.STUDY, **EVAL).read_bytes())
    calls = []
    real = C.corrupt_one
    monkeypatch.setattr(C, "corrupt_one", lambda *a: calls.append(a) or real(*a))
    with pytest.warns(UserWarning, match="rebuilding"):
        (rebuilt,) = C.build(dataset, key={"d": 1}, workers=0, cache_dir=tmp_path, **EVAL)
    assert not rebuilt.from_cache and len(calls) == 6 and torch.equal(rebuilt.images, first.images)
    (third,) = C.build(dataset, key={"d": 1}, workers=0, cache_dir=tmp_path, **EVAL)
    assert third.from_cache and torch.equal(third.images, first.images)


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def boom(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        C.build(synthetic(3), key={}, workers=0, cache_dir=tmp_path, **EVAL)
    assert list(tmp_path.iterdir()) == []


def test_full_grid(tmp_path):
    dataset = synthetic(3)
    sets = C.build(dataset, key={"g": 1}, setting="full", workers=0, cache_dir=tmp_path, severity=1, **EVAL)
    assert [(s.setting, s.severity) for s in sets] == [(n, v) for n in C.ALL for v in range(1, 6)]
    for s in sets:
        assert s.corruptions == [s.setting] * 3 and s.images.shape == (3, 3, 32, 32) and s.images.dtype == torch.uint8
        assert torch.equal(s.labels, torch.tensor([0, 1, 2]))
    assert len(list(tmp_path.glob("*.pt"))) == 75
    clean = dataset.tensors[0]
    assert all(not torch.equal(s.images, clean) for s in sets)
    by = {(s.setting, s.severity): s.images for s in sets}
    assert not torch.equal(by["fog", 1], by["fog", 5])

    for path in tmp_path.glob("snow-*"):  # a partial grid reuses what is there
        path.unlink()
    again = C.build(dataset, key={"g": 1}, setting="full", workers=0, cache_dir=tmp_path, **EVAL)
    assert [s.setting for s in again if not s.from_cache] == ["snow"] * 5
    assert all(torch.equal(a.images, s.images) for a, s in zip(again, sets))


def test_time_build(digits):
    assert C.time_build(digits, workers=0) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"setting": "grid"}, "setting"),
        ({"severity": 0}, "severity"),
        ({"severity": 6}, "severity"),
        ({"severity": 3.0}, "severity"),
        ({"seed": "0"}, "seed"),
        ({"workers": -1}, "workers"),
        ({"names": ("rain",)}, "names"),
        ({"names": ()}, "names"),
        ({"resolution": "resized"}, "resolution"),
        ({"blocks": "array_split"}, "blocks"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.build(synthetic(2), key={}, **{**EVAL, **kwargs})


def test_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        C.build(synthetic(0), key={})
    with pytest.raises(ValueError, match="uint8"):
        C.build(Items(torch.rand(2, 3, 32, 32), torch.zeros(2)), key={})
    mixed = [(torch.zeros(3, 32, 32, dtype=torch.uint8), 0), (torch.zeros(3, 32, 32), 1)]
    with pytest.raises(ValueError, match="uint8"):
        C.build(mixed, key={}, **EVAL)  # only the first item is checked up front
    with pytest.raises(ValueError, match="at least 32"):
        C.build(synthetic(2, size=16), key={}, **EVAL)
    with pytest.raises(ValueError, match="key"):
        C.build(synthetic(2), key={"bad": {1, 2}}, cache_dir=tmp_path, **EVAL)
    with pytest.raises(ValueError, match=r"native\(index\).*Items.*resolution='evaluation'"):
        C.build(synthetic(2), key={})  # the default (native) needs native images
