"""No non-finite number is stored: a model whose logits are NaN or Inf (on clean, corrupted, adversarial or
noisy inputs) fails the measurement with its reason, and nothing is written for it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rft_fast import data
from rft_fast.attacks import NonFiniteError
from rft_fast.eval import EvalSettings, RunInfo, autoattack, evaluate
from rft_fast.eval.smoothing import certify
from rft_fast.results import Store

RUN = RunInfo("nan-run", "digits3", "tiny", "trades", "FFT-5", {})


class Poisoned(nn.Module):
    """A linear classifier on 8x8 images whose logits turn non-finite when `poison` says so."""

    def __init__(self, poison: str = "nan", when: str = "always") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 * 8 * 8, 3)
        self.poison, self.when = poison, when

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(nn.functional.interpolate(x, size=8).flatten(1))
        bad = float(self.poison)
        if self.when == "always":
            return logits + bad
        # only away from the clean images: e.g. adversarial or noisy inputs, which are not on the 1/255 grid
        off_grid = ((x * 255 - (x * 255).round()).abs().flatten(1).amax(1) > 1e-3)[:, None]
        return torch.where(off_grid, logits + bad, logits)


@pytest.fixture(scope="module")
def test_set():
    return data.build("digits3", image_size=32).test


def _failures(model, test_set, threats, tmp_path):
    failed: dict[str, Exception] = {}
    with Store(tmp_path / "r.sqlite") as store:
        rows = evaluate(
            model,
            test_set,
            RUN,
            EvalSettings(threats=threats, n=6, mode="fast", workers=0),
            store=store,
            on_failure=lambda t, e: failed.setdefault(t, e),
        )
        stored = store.query()
    return rows, stored, failed


@pytest.mark.parametrize("poison", ["nan", "inf", "-inf"])
def test_a_model_with_non_finite_logits_stores_nothing(test_set, tmp_path, poison):
    rows, stored, failed = _failures(Poisoned(poison), test_set, ("clean", "Linf", "corruptions"), tmp_path)
    assert rows == [] and stored == []
    assert sorted(failed) == ["Linf", "clean", "corruptions"]
    assert all(isinstance(e, NonFiniteError) for e in failed.values())
    assert "not finite (NaN or Inf) on 6 of 6 clean images" in str(failed["clean"])


def test_non_finite_only_on_adversarial_points_fails_the_attack(test_set):
    x, y = (
        torch.stack([test_set[i][0] for i in range(6)]).float() / 255,
        torch.tensor([test_set[i][1] for i in range(6)]),
    )
    with pytest.raises(NonFiniteError, match="adversarial points|not finite"):
        autoattack(Poisoned("nan", when="off-grid"), x, y, norm="Linf", eps=8 / 255, mode="fast")


def test_non_finite_on_noisy_copies_fails_the_certificate(test_set):
    x = torch.stack([test_set[i][0] for i in range(2)]).float() / 255
    with pytest.raises(NonFiniteError, match="noisy copies"):
        certify(Poisoned("nan", when="off-grid"), x, 0.25, n0=4, n=8, alpha=0.001, batch_size=8, seed=0)


def test_a_finite_model_is_measured_as_before(test_set, tmp_path):
    rows, stored, failed = _failures(Poisoned("0"), test_set, ("clean",), tmp_path)
    assert failed == {} and len(rows) == len(stored) == 1 and 0.0 <= rows[0].accuracy <= 1.0
