"""The one evaluation entry point of `rft-fast eval` and the grid: a trained run (a `rft-fast train` checkpoint or
run folder, or a fine-tuned weights file) loaded, its test split built, every threat of the settings measured
into the store, each threat's failure recorded (with its one-line reason) while the others still run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rft_fast.eval.evaluate import evaluate
from rft_fast.eval.images import image_source
from rft_fast.eval.settings import EvalSettings, RunInfo
from rft_fast.results import Measurement, Store
from rft_fast.results.importing import NAMESPACE


@dataclass
class EvalOutcome:
    """What one evaluation did: the run its rows are stored under, the rows, and the failed threats with their
    reasons (empty when every threat was measured)."""

    run: RunInfo
    rows: list[Measurement] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def reason(error: BaseException) -> str:
    """One line for an error: the last non-empty line of its message (Ray wraps a trial's error in a traceback
    whose last line is the exception), else its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_checkpoint(
    checkpoint: str | Path,
    settings: EvalSettings,
    store: Store | None,
    *,
    run: RunInfo | None = None,
    run_id: str | None = None,
    data_root: str | None = None,
    device: str | None = None,
    progress: bool = False,
    on_result: Callable[[Measurement], None] | None = None,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> EvalOutcome:
    """Evaluates a `rft-fast train` checkpoint (checkpoint.pt or its run folder) on its dataset's test split.

    run: the RunInfo to store the rows under (the grid's); by default the checkpoint's TrainConfig gives it
    (run_id, if given, replacing the config's hash). data_root: the dataset's root (default: the config's).
    device: default cuda when visible. on_failure(threat, error) is called after the failure is recorded in
    the outcome; a failure to load the checkpoint or build the data raises (nothing was measured), and so does a
    dataset whose class names differ from those the checkpoint recorded (ValueError naming both lists)."""
    from rft_fast.train.trained import load_run

    trained = load_run(checkpoint, device or default_device())
    model, config = trained.model, trained.config
    if run is None:
        run = RunInfo(
            run_id or config.run_id(), config.dataset, config.backbone, config.loss, config.protocol, config.hparams()
        )
    return evaluate_model(
        model,
        run,
        settings,
        store,
        data_root=data_root or config.data_root,
        image_size=config.image_size,
        classes=trained.classes,
        progress=progress,
        on_result=on_result,
        on_failure=on_failure,
    )


def evaluate_weights(
    backbone: str,
    weights: str | Path,
    dataset: str,
    settings: EvalSettings,
    store: Store | None,
    *,
    image_size: int = 224,
    data_root: str | None = None,
    loss: str = "unknown",
    protocol: str = "unknown",
    run_id: str | None = None,
    device: str | None = None,
    progress: bool = False,
    on_result: Callable[[Measurement], None] | None = None,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> EvalOutcome:
    """Evaluates any fine-tuned checkpoint of a registered backbone (a state dict, head included); its rows are
    stored under run_id (default: the weights file's name) with the loss / protocol labels given."""
    from rft_fast import data, models

    if image_source(settings.images).needs_test_set:
        num_classes = data.build(dataset, data_root, image_size=image_size).num_classes
    else:  # the frozen images need no local copy of the dataset: the registry knows its classes
        num_classes = data.lookup(dataset).num_classes
    model = models.load_finetuned(backbone, num_classes, str(weights), image_size=image_size)
    model = model.to(device or default_device()).eval()
    run = RunInfo(run_id or Path(weights).stem, dataset, backbone, loss, protocol, {})
    return evaluate_model(
        model,
        run,
        settings,
        store,
        data_root=data_root,
        image_size=image_size,
        progress=progress,
        on_result=on_result,
        on_failure=on_failure,
    )


def evaluate_model(
    model: torch.nn.Module,
    run: RunInfo,
    settings: EvalSettings,
    store: Store | None,
    *,
    data_root: str | None,
    image_size: int,
    classes: list[str] | None = None,
    progress: bool = False,
    on_result: Callable[[Measurement], None] | None = None,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> EvalOutcome:
    """The shared part: `run.dataset`'s test split at image_size built (its class names checked against
    `classes`, the trained run's, when given; not built when settings.images needs no test split), `evaluate`
    into the store, failures kept."""
    from rft_fast import data
    from rft_fast.train.trained import check_classes

    if run.run_id.startswith(NAMESPACE + ":"):
        raise ValueError(f"--run-id {run.run_id!r}: ids starting with '{NAMESPACE}:' are kept for imported rows")
    test = None
    if image_source(settings.images).needs_test_set:
        splits = data.build(run.dataset, data_root, image_size=image_size)
        check_classes(classes, splits.classes, run=run.run_id, dataset=run.dataset)
        test = splits.test
    outcome = EvalOutcome(run)

    def failed(threat: str, error: Exception) -> None:
        outcome.failures[threat] = reason(error)
        if on_failure is not None:
            on_failure(threat, error)

    source_key: dict[str, Any] = {"dataset": run.dataset, "split": "test", "image_size": image_size}
    outcome.rows = evaluate(
        model,
        test,
        run,
        settings,
        store=store,
        source_key=source_key,
        progress=progress,
        on_result=on_result,
        on_failure=failed,
    )
    return outcome
