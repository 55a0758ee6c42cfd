"""The reference study's constants (arXiv 2508.14079; docs/study.md), stated once: the norms as AutoAttack names
them, the evaluation radii, the training radius, the test subset size and the paper's names of its datasets."""

from __future__ import annotations

NORMS = ("Linf", "L2", "L1")
STUDY_EPS = {"Linf": 4 / 255, "L2": 2.0, "L1": 75.0}  # AutoAttack's evaluation radii per norm
TRAIN_EPS = 4 / 255  # the training attack's Linf radius (APGD-CE, 10 steps)
STUDY_N = 1000  # images of the stratified test subset every threat is measured on
# our dataset name -> the paper's (its folder names, its results table's `dataset` column, its RobustGenBench
# archives "<name>_processed.tar.zst")
PAPER_DATASET_NAMES = {
    "caltech101": "caltech101",
    "fgvc_aircraft": "fgvc-aircraft-2013b",
    "flowers102": "flowers-102",
    "oxford_pets": "oxford-iiit-pet",
    "stanford_cars": "stanford_cars",
    "uc_merced": "uc-merced-land-use-dataset",
}
