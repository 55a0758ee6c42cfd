"""The study's corruption protocol: the paper's block assignment pinned on several N, corruption at the native
resolution (traced through nested Subset views to the ImageSource) then resized, the small-image rule, and the
settings that select it (identity, errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from rft_fast.data.sources import ImageSource
from rft_fast.data.splits import LabeledSubset
from rft_fast.eval import EvalSettings
from rft_fast.eval import corruptions as C

imagecorruptions = pytest.importorskip("imagecorruptions")


def paper_blocks(n: int, names: tuple[str, ...]) -> list[str]:
    """The study code's rule, written out: step = max(1, n // k), type (i // step) % k."""
    step = max(1, n // len(names))
    return [names[(i // step) % len(names)] for i in range(n)]


@pytest.mark.parametrize("n", [1, 5, 10, 11, 12, 21, 22, 23, 100, 359, 420, 1000, 1001])
def test_assign_is_the_papers_formula(n):
    assert C.assign(n) == paper_blocks(n, C.STUDY)


def test_assign_pinned_values():
    assert C.assign(5) == list(C.STUDY[:5])  # n < 11: one image each of the first n types
    assert C.assign(12) == [*C.STUDY, C.STUDY[0]]
    assert C.assign(23) == [t for t in C.STUDY for _ in range(2)] + [C.STUDY[0]]
    names = C.assign(1000)  # step 90: 990 images in blocks of 90, the last 10 wrap to shot_noise
    assert names[:90] == ["shot_noise"] * 90 and names[900:990] == ["jpeg_compression"] * 90
    assert names[990:] == ["shot_noise"] * 10 and names.count("shot_noise") == 100
    assert C.assign(1000, blocks="even").count("shot_noise") == 91  # today's array_split option


class Natives:
    """A PIL base of given native sizes (random pixels), as torchvision datasets deliver items."""

    def __init__(self, sizes: list[tuple[int, int]], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = [Image.fromarray(rng.integers(20, 236, (h, w, 3), dtype=np.uint8)) for w, h in sizes]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.images[index], index % 2


def source(sizes: list[tuple[int, int]], image_size: int = 32) -> ImageSource:
    return ImageSource(Natives(sizes), [i % 2 for i in range(len(sizes))], ["a", "b"], image_size)


def test_native_resolution_then_resize():
    src = source([(48, 40), (64, 64), (40, 56), (33, 90)])  # (width, height) natives, evaluated at 32 x 32
    view = LabeledSubset(LabeledSubset(src, [3, 2, 1, 0]), [2, 0, 3])  # nested views: items 1, 3, 0 of src
    (result,) = C.build(view, key={}, workers=0, names=("shot_noise",), seed=5)
    assert result.images.shape == (3, 3, 32, 32) and result.images.dtype == torch.uint8
    for i, inner in enumerate([1, 3, 0]):
        native = np.asarray(src.native(inner))
        seed = C.image_seed(5, "shot_noise", 3, i)
        np.random.seed(seed)
        expected = imagecorruptions.corrupt(native, severity=3, corruption_name="shot_noise")
        resized = F.resize(torch.from_numpy(expected).permute(2, 0, 1), [32, 32], antialias=True)
        assert torch.equal(result.images[i], resized), i
    (resized_first,) = C.build(view, key={}, workers=0, names=("shot_noise",), seed=5, resolution="evaluation")
    assert not torch.equal(resized_first.images, result.images)
    # per-pixel noise averaged by the downsizing: the native setting changes the images less (the paper's point)
    clean = torch.stack([view[i][0] for i in range(3)]).float()
    native_change = (result.images.float() - clean).abs().mean()
    assert native_change < (resized_first.images.float() - clean).abs().mean()


def test_small_native_images_are_upsampled_to_the_minimum():
    src = source([(8, 8), (16, 8), (40, 20)])
    assert C.native_image(src, 0).shape == (32, 32, 3)
    assert C.native_image(src, 1).shape == (32, 64, 3)  # shorter side to 32, aspect kept
    assert C.native_image(src, 2).shape == (32, 64, 3)
    expected = F.resize(F.pil_to_tensor(src.native(0)), [32, 32], antialias=True).permute(1, 2, 0).numpy()
    assert np.array_equal(C.native_image(src, 0), expected)
    (result,) = C.build(src, key={}, workers=0, names=("brightness",))  # corrupted at 32 x 32, back to 32
    assert result.images.shape == (3, 3, 32, 32)


def test_native_needs_a_source():
    items = [(torch.zeros(3, 32, 32, dtype=torch.uint8), 0)]
    with pytest.raises(ValueError, match=r"native\(index\).*list.*resolution='evaluation'"):
        C.build(items, key={})
    with pytest.raises(ValueError, match="evaluation"):
        C.native_source(torch.utils.data.Subset(items, [0]), 0)


def test_settings_select_and_identify_the_protocol():
    default = EvalSettings()
    assert (default.corruption_resolution, default.corruption_blocks, default.images) == ("native", "study", "drawn")
    # rows stored before the study's draw (no "draw" entry) are stale: the grid measures them again
    assert default.identity() == {"draw": 2, "n": 1000, "subset_seed": 0, "seed": 0}
    other = EvalSettings(corruption_resolution="evaluation", corruption_blocks="even")
    assert other.identity() == {
        **default.identity(),
        "corruption_resolution": "evaluation",
        "corruption_blocks": "even",
    }
    with pytest.raises(ValueError, match="corruption_blocks"):
        EvalSettings(corruption_blocks="array_split")
    with pytest.raises(ValueError, match="corruption_resolution"):
        EvalSettings(corruption_resolution="resized")
    settings = EvalSettings.from_dict({"corruption_resolution": "evaluation", "images": "drawn"})
    assert settings.corruption_resolution == "evaluation"


def test_full_grid_rows_include_the_expected_aggregates(monkeypatch):
    """The full grid stores a row per (type, severity) and per severity the "full" aggregate, the rows the threat
    registry expects (what the grid's done check looks for). The sets are faked: only the rows are under test."""
    from torch import nn

    from rft_fast.eval import RunInfo, evaluate
    from rft_fast.results import expected_rows

    src = source([(32, 32)] * 4)
    offsets = {name: k for k, name in enumerate(C.ALL)}

    def fake_build(dataset, *, names, **kwargs):
        clean = torch.stack([dataset[i][0] for i in range(len(dataset))])
        labels = torch.as_tensor([dataset[i][1] for i in range(len(dataset))])
        return [
            C.CorruptedSet(names[0], v, (clean + offsets[names[0]] + v).to(torch.uint8), labels, [names[0]] * 4, False)
            for v in C.SEVERITIES
        ]

    monkeypatch.setattr(C, "build", fake_build)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)).eval()
    settings = EvalSettings(threats=("corruptions",), corruption_setting="full", n=4)
    rows = evaluate(model, src, RunInfo("r", "digits", "linear", "ce", "FFT-5", {}), settings)
    have = {(m.threat, m.eps, m.corruption, m.severity, m.mode) for m in rows}
    assert expected_rows("corruptions", settings) <= have and len(rows) == 15 * 5 + 5
    for v in C.SEVERITIES:
        per_type = [m.accuracy for m in rows if m.severity == v and m.corruption != "full"]
        (aggregate,) = [m for m in rows if m.severity == v and m.corruption == "full"]
        assert len(per_type) == 15 and aggregate.accuracy == pytest.approx(sum(per_type) / 15) and aggregate.n == 4
