"""Loading what `fit` produced: the model of a checkpoint, with the configuration that trained it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rft_fast import models
from rft_fast.train import checkpoint
from rft_fast.train.config import TrainConfig


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """(model in eval mode on `device`, its TrainConfig) from a `rft-fast train` checkpoint file or run folder.
    A TORA run gives its ToraViT (the fused prediction; `model.view("acc" | "rob")` for one path)."""
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
            config.backbone, state["num_classes"], random_init=True, image_size=config.image_size
        )
        model = config.protocol_spec.recipe.build(model, config)  # the protocol's architecture (TORA's adapters)
        model.load_state_dict(state["model"])
    except (ValueError, TypeError, KeyError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise checkpoint.CheckpointError(f"{path} does not hold a model its configuration describes: {first}") from None
    return model.to(device).eval(), config
