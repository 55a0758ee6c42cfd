"""Downloading a registered dataset into the layout its reader expects (`rft-fast datasets fetch NAME --root DIR`).

Only this module touches the network, and only when asked: `build` never downloads. Where torchvision has a
download (Caltech-101, FGVC-Aircraft, Flowers-102, Oxford-IIIT Pet) it is torchvision's own (download=True,
its URLs and checksums); UC Merced comes from its official archive, checked against its MD5 (the value
torchgeo pins for the same file, microsoft/torchgeo torchgeo/datasets/ucmerced.py), with torchgeo's copy on the
Hugging Face hub as the mirror tried when the official host fails. Stanford Cars' host is gone: its fetcher
says where the mirrors are.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

UC_MERCED_URLS = (
    "http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip",
    "https://huggingface.co/datasets/torchgeo/ucmerced/resolve/main/UCMerced_LandUse.zip",
)
UC_MERCED_MD5 = "5b7ec56793786b6dc8a908e8854ac0e4"

STANFORD_CARS_MIRRORS = (
    "Stanford Cars cannot be downloaded: its original host (ai.stanford.edu/~jkrause/cars) is gone, and with it "
    "torchvision's download. The workaround of pytorch/vision issue #7545: the images from the Kaggle copy "
    "https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset (remove its doubled folders, e.g. "
    "cars_test/cars_test), the devkit from https://github.com/pytorch/vision/files/11644847/car_devkit.tgz, and "
    "cars_test_annos_withlabels.mat as linked in that issue, arranged as\n"
    "  <root>/stanford_cars/devkit/{cars_meta.mat,cars_train_annos.mat}\n"
    "  <root>/stanford_cars/cars_train/<id>.jpg\n"
    "  <root>/stanford_cars/cars_test/<id>.jpg\n"
    "  <root>/stanford_cars/cars_test_annos_withlabels.mat"
)


class FetchError(RuntimeError):
    """A dataset could not be downloaded (no download exists, the network failed, a checksum differed)."""


def _torchvision(cls_name: str, *splits: dict[str, Any]) -> Callable[[Path], None]:
    """A fetcher calling torchvision.datasets.<cls_name>(root, download=True, **split) for each split given."""

    def fetch(root: Path) -> None:
        import torchvision.datasets

        for kwargs in splits or ({},):
            try:
                getattr(torchvision.datasets, cls_name)(str(root), download=True, **kwargs)
            except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad checksum a RuntimeError
                raise FetchError(f"torchvision.datasets.{cls_name}(download=True) failed: {err}") from err

    fetch.__doc__ = f"torchvision.datasets.{cls_name}(<root>, download=True)"
    return fetch


fetch_caltech101 = _torchvision("Caltech101")
fetch_fgvc_aircraft = _torchvision("FGVCAircraft")  # one archive holds every split
fetch_flowers102 = _torchvision("Flowers102")  # the images, imagelabels.mat and setid.mat
fetch_oxford_pets = _torchvision("OxfordIIITPet")  # images and annotations


def fetch_uc_merced(root: Path) -> None:
    """UCMerced_LandUse.zip (MD5-checked) extracted into <root> (<root>/UCMerced_LandUse/Images/<class>/);
    the archive is removed once extracted."""
    from torchvision.datasets.utils import download_and_extract_archive

    errors = []
    for url in UC_MERCED_URLS:
        try:
            download_and_extract_archive(url, str(root), md5=UC_MERCED_MD5, remove_finished=True)
            return
        except (OSError, RuntimeError) as err:  # network errors; "File not found or corrupted." on a bad MD5
            errors.append(f"{url}: {err}")
            (root / "UCMerced_LandUse.zip").unlink(missing_ok=True)
    raise FetchError("UC Merced could not be downloaded:\n  " + "\n  ".join(errors))


def fetch_stanford_cars(root: Path) -> None:
    """No download exists: a FetchError with the mirror instructions."""
    raise FetchError(STANFORD_CARS_MIRRORS)
