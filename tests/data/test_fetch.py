"""`rft-fast datasets fetch` / data.download without the network: UC Merced's archive served from tmp_path by a
local HTTP server (torchvision's download_and_extract_archive, the MD5 check and the extraction all run), the
torchvision-backed datasets with torchvision's class replaced by a recorder, Stanford Cars' mirror message."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from PIL import Image
from torchvision.datasets.utils import calculate_md5

from rft_fast import data
from rft_fast.cli import main
from rft_fast.data import fetch
from rft_fast.data.fetch import FetchError


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(folder, its URL): files put in the folder are served over HTTP on 127.0.0.1."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def uc_merced_zip(path: Path) -> str:
    """A UCMerced_LandUse.zip as the official one is laid out (21 class folders of .tif), its MD5."""
    with zipfile.ZipFile(path, "w") as archive:
        for c in range(21):
            for k in range(2):
                tif = path.parent / "tmp.tif"
                Image.fromarray(np.full((8, 8, 3), 10 * c + k, dtype=np.uint8)).save(tif)
                archive.write(tif, f"UCMerced_LandUse/Images/class{c:02d}/class{c:02d}{k:02d}.tif")
                tif.unlink()
    return calculate_md5(str(path))


def test_uc_merced_download(tmp_path: Path, served, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = served
    md5 = uc_merced_zip(folder / "UCMerced_LandUse.zip")
    monkeypatch.setattr(fetch, "UC_MERCED_URLS", (f"{url}/UCMerced_LandUse.zip",))
    monkeypatch.setattr(fetch, "UC_MERCED_MD5", md5)
    root = tmp_path / "data"
    assert data.download("uc_merced", root) is True
    assert not (root / "UCMerced_LandUse.zip").exists()  # removed once extracted
    (images,) = data.lookup("uc_merced").open(root, 8).values()  # the layout the reader expects
    assert len(images) == 42 and len(images.classes) == 21
    assert data.download("uc_merced", root) is False  # already there: nothing fetched


def test_uc_merced_bad_checksum_then_mirror(tmp_path: Path, served, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, url = served
    md5 = uc_merced_zip(folder / "good.zip")
    (folder / "bad.zip").write_bytes(b"not the archive")
    monkeypatch.setattr(fetch, "UC_MERCED_URLS", (f"{url}/bad.zip", f"{url}/missing.zip"))
    monkeypatch.setattr(fetch, "UC_MERCED_MD5", md5)
    with pytest.raises(FetchError, match=r"(?s)bad.zip: .*missing.zip: "):
        data.download("uc_merced", tmp_path / "data")
    monkeypatch.setattr(fetch, "UC_MERCED_URLS", (f"{url}/missing.zip", f"{url}/good.zip"))  # the mirror serves
    assert data.download("uc_merced", tmp_path / "data") is True


@pytest.mark.parametrize(
    "name, cls", [("caltech101", "Caltech101"), ("fgvc_aircraft", "FGVCAircraft"), ("oxford_pets", "OxfordIIITPet")]
)
def test_torchvision_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, cls: str) -> None:
    calls = []

    def recorder(root: str, download: bool = False, **kwargs) -> None:
        calls.append((root, download, kwargs))
        raise RuntimeError("File not found or corrupted.")  # what torchvision says after a failed download

    monkeypatch.setattr(torchvision.datasets, cls, recorder)
    with pytest.raises(FetchError, match=f"torchvision.datasets.{cls}\\(download=True\\) failed: File not found"):
        data.download(name, tmp_path)
    assert calls == [(str(tmp_path), True, {})]


def test_flowers_download_gives_the_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.io

    def flowers(root: str, download: bool = False, **kwargs) -> None:  # writes what torchvision's download does
        folder = Path(root) / "flowers-102"
        (folder / "jpg").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "jpg" / "image_00001.jpg")
        scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([[1]])})
        scipy.io.savemat(folder / "setid.mat", {k: np.array([[1]]) for k in ("trnid", "valid", "tstid")})

    flowers.classes = torchvision.datasets.Flowers102.classes  # the reader takes the names from torchvision
    monkeypatch.setattr(torchvision.datasets, "Flowers102", flowers)
    assert data.download("flowers102", tmp_path) is True
    assert len(data.build("flowers102", tmp_path, image_size=8).test) == 1


def test_no_download(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="(?s)pytorch/vision issue #7545.*<root>/stanford_cars/cars_test_annos"):
        data.download("stanford_cars", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="'digits' has no download"):
        data.download("digits", tmp_path)
    with pytest.raises(SystemExit, match="error: stanford_cars: Stanford Cars cannot be downloaded.*Kaggle"):
        main(["datasets", "fetch", "stanford_cars", "--root", str(tmp_path)])


def test_cli_fetch(tmp_path: Path, served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    folder, url = served
    monkeypatch.setattr(fetch, "UC_MERCED_MD5", uc_merced_zip(folder / "UCMerced_LandUse.zip"))
    monkeypatch.setattr(fetch, "UC_MERCED_URLS", (f"{url}/UCMerced_LandUse.zip",))
    assert main(["datasets", "fetch", "uc_merced", "--root", str(tmp_path / "d")]) == 0
    assert main(["datasets", "fetch", "uc_merced", "--root", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert f"uc_merced: downloaded into {tmp_path / 'd'}" in out and "uc_merced: already present under" in out
