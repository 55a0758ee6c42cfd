"""The paper's published results table as a Layout for `rft-fast results import` (rft_fast.results.importing).

The paper (arXiv 2508.14079) publishes every measurement as results_dataset.csv in github
MaxHeuillet/robust_training (1,440 rows: 40 backbones x 6 datasets x 2 losses x 3 protocols, accuracies as
fractions). Its header, as pandas wrote it:

    ,clean_acc,Linf_acc,L2_acc,L1_acc,common_acc,sum,geom,model_size,backbone,dataset,loss_function,
    pre_training_dataset,pre_training_strategy,volume_pre_training_data,backbone_name,model_type,ft_strategy

What each column becomes is data here: the five accuracies and the configuration are ours (loss_function ->
loss, ft_strategy -> protocol); the backbone's study labels (size class, architecture type, pretraining, its
short display name) are kept per row in the measurements' versions as provenance (the report takes its own from
the models registry); the row index and sum / geom (derived from the five accuracies; the report recomputes
both) are ignored. Its spellings of datasets, losses and protocols map to ours through the tables below; its 40
backbone spellings are registered names or aliases in rft_fast.models (e.g. "CLIP-convnext_base_w-laion2B-
s13B-b82K", "efficientnet-b0", "mobilevit-small"), so they need no table.
"""

from __future__ import annotations

from rft_fast.results.csv_reading import Layout
from rft_fast.study import PAPER_DATASET_NAMES

# the paper's dataset folder names (load_results.py `datas`) -> the rft_fast.data registry's
PAPER_DATASETS = {paper: ours for ours, paper in PAPER_DATASET_NAMES.items()}
# loss_function as the table writes it, and as the paper's code names the losses (TRADES_v2, CLASSIC_AT)
PAPER_LOSSES = {"Classic AT": "classic_at", "TRADES": "trades", "CLASSIC_AT": "classic_at", "TRADES_v2": "trades"}
PAPER_PROTOCOLS = {"FFT (50 epochs)": "FFT-50", "FFT (5 epochs)": "FFT-5", "LP (50 epochs)": "LP-50"}
# test images behind each accuracy: the study's 1,000-image subset, or the whole test split where it is smaller
# (UC Merced: 20 % of 2,100 images; the table's UC Merced accuracies are multiples of 1/1260 = 1/(3 x 420))
PAPER_TEST_IMAGES = {"uc_merced": 420}
PAPER_PROVENANCE = (
    "model_size",
    "model_type",
    "pre_training_strategy",
    "pre_training_dataset",
    "volume_pre_training_data",
    "backbone_name",
)
PAPER_IGNORED = {
    "": "pandas' row index",
    "sum": "the sum of the five accuracies (the report recomputes it as score_sum)",
    "geom": "the product of the five accuracies (the report recomputes it)",
}

PAPER = Layout(
    name="paper",
    title="the paper's results_dataset.csv, arXiv 2508.14079",
    columns={
        "backbone": "backbone",
        "dataset": "dataset",
        "loss_function": "loss",
        "ft_strategy": "protocol",
        "clean_acc": "clean",
        "Linf_acc": "Linf",
        "L2_acc": "L2",
        "L1_acc": "L1",
        "common_acc": "common",
    },
    required=(
        "backbone",
        "dataset",
        "loss_function",
        "ft_strategy",
        "clean_acc",
        "Linf_acc",
        "L2_acc",
        "L1_acc",
        "common_acc",
    ),
    provenance=PAPER_PROVENANCE,
    ignored=PAPER_IGNORED,
    names={"dataset": PAPER_DATASETS, "loss": PAPER_LOSSES, "protocol": PAPER_PROTOCOLS},
    test_images=PAPER_TEST_IMAGES,
    source="arXiv:2508.14079",
)
