"""evaluate(): the study's five measurements of one fine-tuned model, each written to the store when done.

Clean accuracy, AutoAttack Linf / L2 / L1 robust accuracy and common-corruption accuracy, all on the same
stratified, seeded subset of the test split (1,000 images by default). Each measurement is stored the moment
it is finished, in its own transaction, so a crash loses at most the one in flight; re-running replaces rows.

Opt-in (OPTIONAL_THREATS, never in the default): "smoothing-L2", randomized-smoothing certification
(rft_fast.eval.smoothing.certify, Cohen et al. 2019) at each sigma of settings.smoothing_sigmas. Per sigma it
stores the smoothed classifier's Monte-Carlo accuracy (eps None, carrying the certification's seconds) and the
certified accuracy at each radius of settings.smoothing_radii (eps = the radius, seconds 0), all with mode
"sigma=<sigma>" and the CERTIFY parameters in versions["smoothing"] (rft_fast.results.store documents the rows).
"""
from __future__ import annotations

import time
from importlib import metadata
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rft_fast import data
from rft_fast.eval import corruptions
from rft_fast.eval.autoattack import NORMS, STUDY_EPS, autoattack, predict
from rft_fast.eval.smoothing import certified_accuracy, certify, smoothed_accuracy
from rft_fast.eval.settings import ALL_THREATS, OPTIONAL_THREATS, THREATS, EvalSettings, RunInfo
from rft_fast.results import SMOOTHING, Measurement, Store, smoothing_mode

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
    test_set: Dataset,
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

    test_set: the test split (uint8 items at the model's resolution); the same stratified subset of
    settings.n images (seed settings.subset_seed) serves every threat. source_key identifies test_set for
    the corruption cache (dataset, split, resolution); by default it is built from `run.dataset`.
    Threats run in ALL_THREATS order. on_failure(threat, error): a threat that raises is passed to it and the
    next threat runs (without it, the error propagates). progress: a bar per AutoAttack run and corruption build.
    """
    device = next(model.parameters()).device
    subset = data.stratified_subset(test_set, settings.n, seed=settings.subset_seed)
    x, y = _tensors(subset, device)
    batch = settings.batch_size or 128
    stamp = {**versions(), "eval": settings.identity()}
    results: list[Measurement] = []

    def record(threat: str, accuracy: float, n: int, seconds: float, extra: dict[str, Any] | None = None,
               **key: Any) -> None:
        m = Measurement(
            run_id=run.run_id, dataset=run.dataset, backbone=run.backbone, loss=run.loss, protocol=run.protocol,
            hparams=run.hparams, threat=threat, accuracy=accuracy, n=n, seconds=seconds, versions={**stamp, **(extra or {})},
            eps=key.get("eps"), corruption=key.get("corruption"), severity=key.get("severity"), mode=key.get("mode", "-"),
        )
        if store is not None:
            store.put(m)
        if on_result is not None:
            on_result(m)
        results.append(m)

    def clean() -> None:
        t0 = time.perf_counter()
        record("clean", (predict(model, x, batch, "clean images") == y).float().mean().item(), len(y),
               time.perf_counter() - t0)

    def attack(norm: str) -> None:
        r = autoattack(model, x, y, norm=norm, eps=settings.eps.get(norm, STUDY_EPS[norm]), mode=settings.mode,
                       batch_size=settings.batch_size, seed=settings.seed, progress=progress)
        extra = {"autoattack": {**r.plan.record(), "projected": r.projected, "warnings": list(r.warnings)}}
        record(norm, r.robust, r.n, r.seconds, extra, eps=r.eps, mode=r.mode)

    def common() -> None:
        key = dict(source_key or {"dataset": run.dataset, "split": "test", "image_size": int(x.shape[-1])})
        key.update(n=settings.n, subset_seed=settings.subset_seed)
        # The full grid is built one corruption type at a time (5 sets in memory, not 75).
        groups = [None] if settings.corruption_setting == "study" else [(name,) for name in corruptions.ALL]
        for names in groups:
            t0 = time.perf_counter()
            sets = corruptions.build(
                subset, key=key, setting=settings.corruption_setting, severity=settings.severity, seed=settings.seed,
                cache_dir=settings.cache_dir, workers=settings.workers, progress=progress, names=names,
            )
            build_seconds = (time.perf_counter() - t0) / len(sets)
            for cs in sets:
                t0 = time.perf_counter()
                xc, yc = data.to_device(cs.images, cs.labels, device)
                correct = (predict(model, xc, batch, f"{cs.setting} corrupted images") == yc).cpu()
                seconds = time.perf_counter() - t0 + build_seconds
                label = "study" if cs.setting == "study" else cs.setting
                if cs.setting == "study":  # the per-type rows first: the aggregate row marks the threat done
                    for name in dict.fromkeys(cs.corruptions):
                        mask = torch.tensor([c == name for c in cs.corruptions])
                        record("corruption", correct[mask].float().mean().item(), int(mask.sum()), 0.0,
                               corruption=name, severity=cs.severity)
                record("corruption", correct.float().mean().item(), len(yc), seconds, corruption=label, severity=cs.severity)

    def smoothing() -> None:
        for sigma in settings.smoothing_sigmas:
            t0 = time.perf_counter()
            cert = certify(model, x, sigma, n0=settings.smoothing_n0, n=settings.smoothing_n,
                           alpha=settings.smoothing_alpha, batch_size=settings.smoothing_batch_size, seed=settings.seed)
            seconds = time.perf_counter() - t0
            params = {"smoothing": {"sigma": sigma, "n0": settings.smoothing_n0, "n": settings.smoothing_n,
                                    "alpha": settings.smoothing_alpha, "batch_size": settings.smoothing_batch_size,
                                    "seed": settings.seed}}
            mode = smoothing_mode(sigma)
            record(SMOOTHING, smoothed_accuracy(cert, y), len(y), seconds, params, mode=mode)
            for radius, accuracy in zip(settings.smoothing_radii, certified_accuracy(cert, y, settings.smoothing_radii)):
                record(SMOOTHING, accuracy, len(y), 0.0, params, eps=radius, mode=mode)

    steps: dict[str, Callable[[], None]] = {"clean": clean, **{norm: (lambda n=norm: attack(n)) for norm in NORMS},
                                            "corruptions": common, SMOOTHING: smoothing}
    for threat in ALL_THREATS:
        if threat not in settings.threats:
            continue
        if on_failure is None:
            steps[threat]()
            continue
        try:
            steps[threat]()
        except Exception as error:  # noqa: BLE001 - one threat's failure is recorded; the others still run
            on_failure(threat, error)
    return results
