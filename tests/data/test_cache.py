"""The decoded cache (rft_fast.data.cache) and the batched device augmentation: same pixels as the per-item
pipeline, never stale, never corrupt."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from rft_fast import data
from rft_fast.data import augment, cache
from rft_fast.data.augment import Augmented

SIZE = 13  # odd, and not a multiple of anything


def _write_folder(root, n_per_class=(6, 6), shape=(21, 17), seed=0):
    rng = np.random.default_rng(seed)
    for c, n in enumerate(n_per_class):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV, str(tmp_path / "cache"))
    _write_folder(tmp_path / "pics")
    return tmp_path


def _reference_epoch(train, batch_size, seed, epoch):
    """Today's pipeline: DataLoader over the per-item augmentation, converted by to_device."""
    batches = data.loader(train, batch_size, shuffle=True, seed=seed, epoch=epoch, workers=0)
    return [data.to_device(xb, yb, "cpu") for xb, yb in batches]


def _cache_files(tmp_path):
    return sorted((tmp_path / "cache").glob(f"*{cache.SUFFIX}"))


class _Images:
    def __init__(self, images):
        self.images, self.labels, self.classes = images, [0] * len(images), ["a"]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], 0


# (H, W, batch): odd sizes, non-square, a single pixel, batch 1
AUGMENT_CASES = ((17, 23, 9), (1, 1, 3), (31, 8, 1), (64, 64, 4))


@pytest.mark.parametrize("h,w,b", AUGMENT_CASES)
def test_augment_batch_equals_torchvision_per_item(h, w, b):
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))
    for seed, epoch in ((0, 0), (12345, 7)):
        per_item = Augmented(_Images(images), seed)
        per_item.set_epoch(epoch)
        reference = torch.stack([per_item[i][0] for i in range(b)])
        batched = augment.augment_batch(images, augment.draw_params(seed, epoch, range(b)))
        assert torch.equal(batched, reference)
        assert not torch.equal(batched, images) or h * w == 1  # the augmentation did something


def test_augment_params_do_vary_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    params = augment.draw_params(3, 1, range(64))
    assert torch.equal(state, torch.get_rng_state())
    assert 0 < int(params.flip.sum()) < 64
    assert 0.75 <= float(params.brightness.min()) < float(params.brightness.max()) <= 1.25
    assert all(-2 <= a <= 2 for a in params.angles) and len(set(params.angles)) == 64


def test_augment_batch_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        augment.augment_batch(torch.zeros(1, 3, 4, 4), augment.draw_params(0, 0, [0]))


def test_epoch_order_is_the_loaders_order():
    items = list(range(23))
    for seed, epoch in ((0, 0), (5, 3)):
        order = [int(i) for b in data.loader(items, 4, shuffle=True, seed=seed, epoch=epoch) for i in b]
        assert data.epoch_order(23, seed, epoch).tolist() == order


@pytest.mark.parametrize("batch_size", (1, 4))
def test_train_batches_equal_todays_pipeline(folder, batch_size):
    splits = data.build(f"folder:{folder / 'pics'}", image_size=SIZE, seed=0)
    for epoch in (0, 2):  # epoch 2 without epoch 1 first: a resumed run
        reference = _reference_epoch(splits.train, batch_size, seed=9, epoch=epoch)
        cached = list(data.train_batches(splits.train, batch_size, seed=9, epoch=epoch, workers=0))
        assert len(cached) == len(reference)
        for (x, y), (xr, yr) in zip(cached, reference):
            assert x.dtype == torch.float32 and torch.equal(x, xr) and torch.equal(y, yr)
    assert len(_cache_files(folder)) == 1
    assert splits.train.base.dataset.decoded is not None  # val / test items are now read from the cache too
    assert torch.equal(splits.val[0][0], data.build(f"folder:{folder / 'pics'}", image_size=SIZE, seed=0).val[0][0])


def test_train_batches_with_the_cache_off_decode_as_before(folder, monkeypatch):
    monkeypatch.setenv(cache.ENV, "off")
    splits = data.build(f"folder:{folder / 'pics'}", image_size=SIZE)
    batches = list(data.train_batches(splits.train, 3, seed=1, epoch=1, channels_last=True))
    for (x, y), (xr, yr) in zip(batches, _reference_epoch(splits.train, 3, seed=1, epoch=1)):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    assert not (folder / "cache").exists()


def _decode(folder, **kwargs):
    splits = data.build(f"folder:{folder / 'pics'}", image_size=SIZE, **kwargs)
    source = splits.train.base.dataset
    return data.loading.decoded_source(source), source


def test_a_changed_file_is_decoded_again(folder):
    first, source = _decode(folder)
    assert torch.equal(first[0][0], data.sources.to_uint8(source.native(0), SIZE))
    Image.fromarray(np.zeros((21, 17, 3), dtype=np.uint8)).save(source.files[0])
    os.utime(source.files[0], ns=(1, 1))  # a new mtime even on a coarse clock
    second, _ = _decode(folder)
    assert second.path != first.path and not first.path.exists()  # the stale file is gone
    assert int(second.images[0].max()) == 0 and np.array_equal(second.images[1:], first.images[1:])


def test_the_same_files_reuse_the_cache(folder):
    first, _ = _decode(folder)
    stamp = first.path.stat().st_mtime_ns
    second, _ = _decode(folder, seed=5)  # another split seed: the same decoded part
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ("truncate", "flip_byte", "garbage"))
def test_a_damaged_cache_file_is_rebuilt(folder, damage):
    first, _ = _decode(folder)
    good = np.array(first.images)
    path = first.path
    del first
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip_byte":
        raw[5] ^= 0xFF
    else:
        raw = bytearray(b"not a cache file")
    path.write_bytes(bytes(raw))
    with pytest.raises(cache.CorruptCache):
        cache.open_cache(path, cache._read_meta(path)["key"] if damage == "flip_byte" else {})
    rebuilt, _ = _decode(folder)
    assert rebuilt.path == path and np.array_equal(rebuilt.images, good)


class _Failing:
    """A source that dies halfway through decoding (as a kill would stop it)."""

    def __init__(self, n, fail_at):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index == self.fail_at:
            raise RuntimeError("killed")
        return torch.full((3, 4, 4), index, dtype=torch.uint8), 0


def _decoded(source, folder, n):
    labels = np.zeros(n, dtype=np.int64)
    return cache.decoded(
        source, dataset="t", part="train", size=4, identity="x", labels=labels, classes=["a"], folder=folder
    )


def test_an_interrupted_write_leaves_no_cache_file(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        _decoded(_Failing(100, fail_at=90), tmp_path, 100)
    assert not list(tmp_path.glob(f"*{cache.SUFFIX}")) and not list(tmp_path.glob("*.tmp"))
    name = _decoded(_Failing(100, fail_at=-1), tmp_path / "elsewhere", 100).path.name
    orphan = tmp_path / f"{name}.k9a2.tmp"  # what a kill -9 during the write leaves
    orphan.write_bytes(b"half")
    images = _decoded(_Failing(100, fail_at=-1), tmp_path, 100)
    assert images.path.name == name and not orphan.exists()
    assert [int(images[i][0][0, 0, 0]) for i in (0, 99)] == [0, 99]


def test_concurrent_writers_both_get_a_complete_cache(tmp_path):
    results, errors = [], []

    def build():
        try:
            results.append(_decoded(_Failing(50, fail_at=-1), tmp_path, 50))
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert len({r.path for r in results}) == 1 and len(list(tmp_path.glob(f"*{cache.SUFFIX}"))) == 1
    assert all(np.array_equal(r.images[:, 0, 0, 0], np.arange(50)) for r in results)
    assert not list(tmp_path.glob("*.tmp"))


def test_decoded_images_pickle_by_path(tmp_path):
    images = _decoded(_Failing(5, fail_at=-1), tmp_path, 5)
    copy = pickle.loads(pickle.dumps(images))
    assert len(pickle.dumps(images)) < 2000 and np.array_equal(copy.images, images.images)


def test_a_bad_cache_folder_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(cache.ENV, str(blocker / "decoded"))
    _write_folder(tmp_path / "pics")
    splits = data.build(f"folder:{tmp_path / 'pics'}", image_size=SIZE)
    with pytest.raises(cache.CacheError, match=f"{cache.ENV}.*writable folder"):
        next(data.train_batches(splits.train, 2))


def test_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "rft-fast" / "decoded"
    monkeypatch.setenv(cache.ENV, "OFF")
    assert cache.cache_dir() is None
    assert cache.cache_dir(tmp_path / "x") == tmp_path / "x"
