"""evaluate(): the study's five measurements of one fine-tuned model, each written to the store when done.

Clean accuracy, AutoAttack Linf / L2 / L1 robust accuracy and common-corruption accuracy, all on the same
stratified, seeded subset of the test split (1,000 images by default). Each measurement is stored the moment
it is finished, in its own transaction, so a crash loses at most the one in flight; re-running replaces rows.

Opt-in (OPTIONAL_THREATS, never in the default): "smoothing-L2", randomized-smoothing certification
(rft_fast.eval.smoothing.certify, Cohen et al. 2019) at each sigma of settings.smoothing_sigmas. Per sigma it
stores the smoothed classifier's Monte-Carlo accuracy (eps None, carrying the certification's seconds) and the
certified accuracy at each radius of settings.smoothing_radii (eps = the radius, seconds 0), all with mode
"sigma=<sigma>" and the CERTIFY parameters in versions["smoothing"] (rft_fast.results.measurement documents the
rows). Each threat is an entry of the threat registry (rft_fast.results.threats), its run function in rft_fast.eval.runs..
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rft_fast import data, precision
from rft_fast.eval.images import image_source
from rft_fast.eval.runs import ThreatContext
from rft_fast.eval.settings import ALL_THREATS, OPTIONAL_THREATS, THREATS, EvalSettings, RunInfo
from rft_fast.results import Measurement, Store, threat_specs

__all__ = ["ALL_THREATS", "OPTIONAL_THREATS", "THREATS", "EvalSettings", "RunInfo", "evaluate", "versions"]


def versions() -> dict[str, str]:
    """Package versions recorded with every measurement."""
    out = {"torch": torch.__version__}
    for dist in ("rft-fast", "timm", "pyautoattack", "imagecorruptions-imaug"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _tensors(dataset: Dataset, device: torch.device) -> tuple[Tensor, Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    x, y = data.to_device(torch.stack(images), torch.tensor(labels, dtype=torch.int64), device)
    return x, y


def evaluate(
    model: nn.Module,
    test_set: Dataset | None,
    run: RunInfo,
    settings: EvalSettings,
    *,
    store: Store | None = None,
    source_key: dict[str, Any] | None = None,
    progress: bool = False,
    on_result: Callable[[Measurement], None] | None = None,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> list[Measurement]:
    """Measures `model` (taking [0, 1] images, on its device) on the threats of `settings` and returns the
    measurements, each also put into `store` (when given) and passed to `on_result` as soon as it exists.

    test_set: the test split (uint8 items at the model's resolution); with settings.images "drawn" (the
    default) the same stratified subset of settings.n images (seed settings.subset_seed) serves every threat.
    Another image source (rft_fast.eval.images) supplies its own images: "robustgenbench", the paper's frozen
    test and corrupted-test images of `run.dataset` (test_set may then be None; when given, its resolution
    must be theirs). source_key identifies test_set for the corruption cache (dataset, split, resolution); by
    default it is built from `run.dataset`.
    Every forward pass runs under settings.amp's autocast (rft_fast.precision; recorded in each row's
    versions["precision"], and in its identity when not float32), AutoAttack's clean and final checks excepted.
    Threats run in registration order (rft_fast.results.threats). on_failure(threat, error): a threat that raises is passed to it and the
    next threat runs (without it, the error propagates). progress: a bar per AutoAttack run and corruption build.
    """
    device = next(model.parameters()).device
    source = image_source(settings.images)
    if test_set is None and source.needs_test_set:
        raise ValueError(f"test_set: images {settings.images!r} draws from the test split, got None")
    key = dict(source_key or {"dataset": run.dataset, "split": "test"})
    if test_set is not None and len(test_set) and "image_size" not in key:
        key["image_size"] = int(test_set[0][0].shape[-1])
    images = source.draw(test_set, run.dataset, settings, key)
    subset = images.subset
    x, y = _tensors(subset, device)
    chosen = settings.precision_on(device)
    stamp = {
        **versions(),
        "precision": chosen.record(),
        "eval": settings.identity(device),
        **({"images": images.stamp} if images.stamp else {}),
    }
    forward = precision.under(model, chosen)  # every threat's forward passes run under settings.amp's autocast
    results: list[Measurement] = []

    def record(
        threat: str, accuracy: float, n: int, seconds: float, extra: dict[str, Any] | None = None, **key: Any
    ) -> None:
        m = Measurement(
            **run.columns(),
            threat=threat,
            accuracy=accuracy,
            n=n,
            seconds=seconds,
            versions={**stamp, **(extra or {})},
            eps=key.get("eps"),
            corruption=key.get("corruption"),
            severity=key.get("severity"),
            mode=key.get("mode", "-"),
        )
        if store is not None:
            store.put(m)
        if on_result is not None:
            on_result(m)
        results.append(m)

    batch = settings.batch_size or 128
    for spec in threat_specs():
        if spec.name not in settings.threats:
            continue
        ctx = ThreatContext(
            spec, forward, subset, x, y, settings, batch, progress, images.key, record, images.corrupted
        )
        if on_failure is None:
            spec.runner()(ctx)
            continue
        try:
            spec.runner()(ctx)
        except Exception as error:  # noqa: BLE001 - one threat's failure is recorded; the others still run
            on_failure(spec.name, error)
    return results
