"""A small CNN trained on scikit-learn's offline digits (8x8 upscaled to 16x16 RGB), for attack tests.

Deterministic (fixed seeds, single-threaded reductions do not matter at this size); trains in a few seconds
on a CPU. Split: 1,297 training images, the last 500 (after a fixed shuffle) held out for evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_TEST = 500
SIZE = 16


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(64 * (SIZE // 4) ** 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images (N, 3, 16, 16) in [0, 1], labels int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order].contiguous(), y[order]
    return x[:-N_TEST], y[:-N_TEST], x[-N_TEST:], y[-N_TEST:]


def train(epochs: int = 8, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """The trained model (in eval mode), the held-out images and labels, and its clean accuracy on them."""
    x_tr, y_tr, x_te, y_te = load()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(y_tr), generator=gen).split(64):
                loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    return model, x_te, y_te, acc
