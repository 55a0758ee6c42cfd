"""Loading what `fit` produced: the model of a checkpoint, with the configuration that trained it and the class
names of its dataset (so an evaluation can check that its dataset maps labels the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rft_fast import models
from rft_fast.train import checkpoint
from rft_fast.train.config import TrainConfig


@dataclass
class TrainedRun:
    """A loaded `rft-fast train` checkpoint. classes: its dataset's class names in label order (None for a
    checkpoint written before they were recorded)."""

    model: nn.Module
    config: TrainConfig
    classes: list[str] | None


def load_run(path: str | Path, device: str | torch.device = "cpu") -> TrainedRun:
    """The model (in eval mode on `device`), TrainConfig and class names of a `rft-fast train` checkpoint file
    or run folder. A TORA run gives its ToraViT (the fused prediction; `model.view("acc" | "rob")` for one path)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = checkpoint.load(path)
    if not {"config", "model", "num_classes"} <= set(state):
        raise checkpoint.CheckpointError(
            f"{path} is not a checkpoint written by `rft-fast train` (keys: {sorted(map(str, state))[:8]})"
        )
    try:
        config = TrainConfig.from_dict(state["config"])
        model: nn.Module = models.create(
            config.backbone,
            state["num_classes"],
            random_init=True,
            image_size=config.image_size,
            normalization=config.normalization,
        )
        model = config.protocol_spec.recipe.build(model, config)  # the protocol's architecture (TORA's adapters)
        model.load_state_dict(state["model"])
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise checkpoint.CheckpointError(f"{path} does not hold a model its configuration describes: {first}") from None
    classes = state.get("classes")
    return TrainedRun(model.to(device).eval(), config, None if classes is None else [str(c) for c in classes])


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """(model in eval mode on `device`, its TrainConfig) from a `rft-fast train` checkpoint file or run folder
    (`load_run` without the class names)."""
    run = load_run(path, device)
    return run.model, run.config


def check_classes(trained: Sequence[str] | None, found: Sequence[str], *, run: str, dataset: str) -> None:
    """ValueError naming both lists when the dataset evaluated (`found`) does not have the classes, in the same
    label order, that run `run` was trained on (`trained`; None: not recorded, only the count can be checked)."""
    if trained is None or list(trained) == list(found):
        return
    first = next((i for i, (a, b) in enumerate(zip(trained, found)) if a != b), min(len(trained), len(found)))
    raise ValueError(
        f"dataset {dataset!r} has other classes than the run {run} was trained on (first difference at label "
        f"{first}): the run's {len(trained)} classes {list(trained)}; the dataset's {len(found)} classes {list(found)}"
    )
